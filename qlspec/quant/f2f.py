"""Float-to-fake (F2F): turn a float network into a PACT fake-quantised one (QuantLib's F2F step).

`float_to_fake(net, cfg, example_input)` traces `net` with torch.fx and returns a new
`torch.fx.GraphModule` (named after the net's class; `net` itself is not modified) in which:

- every ``nn.Conv2d`` / ``nn.Linear`` is a `PACTConv2d` / `PACTLinear` (same name, same weights);
- every ReLU / ReLU6 call (module or functional) is a `PACTUnsignedAct`. A module called at several
  places (3DDFA_V2's ``DepthWiseBlock.relu`` is called twice) gets one quantiser per call site, since
  each site quantises a different tensor: the first keeps the name, the others are ``<name>_1``, ...;
- an input quantiser ``input_quant`` (`PACTSignedAct`) quantises the network input;
- after each average pooling, an activation quantiser ``<pool>_quant`` brings the mean back onto an
  ``act_bits`` grid (unsigned when the pooled input is non-negative on `example_input`), so F2T can
  compute pooling as sum-then-requantise (``cfg.quantise_pool_output``);
- any Conv/Linear whose input is not already on a quantiser's grid (back-to-back linear operations)
  gets a signed identity quantiser ``<layer>_in_quant`` before it (QuantLib's
  InsertActivationsBetweenLinearsPass). Shape-only ops (flatten, view, reshape, dropout, identity,
  max pooling) keep a tensor on its grid;
- every add of two tensors (a residual) becomes a `PACTIntegerAdd` and every ``torch.cat`` a
  `PACTIntegerConcat`: one signed quantiser on all their inputs, so the merged codes share a grid
  (QuantLib's harmonisation; F2T then requantises each input and adds or concatenates integers);
- BatchNorm stays (F2T folds it into the requantiser), unless ``cfg.fold_bn`` folds it into the
  preceding convolution first (PTQ).

Everything starts in float mode (``started`` false): a `PACTController` or `ptq.calibrate` starts
quantisation. The result therefore computes exactly what `net` computes until then.

Input quantiser design (``cfg.input_clip``, default 1.0 with 8 input bits). The 3DDFA input is
``x = (p - 127.5)/128`` for BGR uint8 pixels ``p``, so ``x/eps`` is a half-integer for any eps that
is 1/128 or a multiple. We use QuantLib's signed almost-symmetric 8-bit quantiser with fixed bounds
``[-1, 127/128]`` (``eps_in = 1/128``) and *flooring*, as QuantLib floors activations:
``floor(x/eps_in) = floor(p - 127.5) = p - 128``, an exact bijection from uint8 pixels onto int8
without clipping. The deployed app therefore feeds ``int8(p - 128)`` (``p ^ 0x80``) and F2T's input
quantiser is ``clip(floor(x/eps_in), -128, 127)`` (note: floor, not round: rounding the half-integer
half-to-even would merge pixels 127 and 128). The price is a constant shift of the fake-quantised input
by ``-eps_in/2 = -1/256`` against the float input, which QAT absorbs and which costs PTQ next to
nothing. Rejected: ``eps_in = 1/256`` (exact, but needs 9 bits), rounding (not injective), and
changing the normalisation to 128 (breaks 3DDFA_V2 checkpoints and our preprocessing contract).
With ``input_clip=None`` the input quantiser is a learned signed quantiser like the others.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable
from typing import Any, Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from qlspec.quant.bn_fold import fold_batchnorm
from qlspec.quant.config import QuantConfig
from qlspec.quant.pact import (
    PACT_ACTIVATIONS,
    PACT_MODULES,
    ActKind,
    PACTConv2d,
    PACTIntegerAdd,
    PACTIntegerConcat,
    PACTLinear,
    PACTSignedAct,
    PACTUnsignedAct,
    _PACTActivation,
    input_quantiser,
)

_RELU_FUNCS: dict[Callable[..., Any], ActKind] = {F.relu: "relu", torch.relu: "relu", F.relu6: "relu6"}
_POOLS = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)
_UNSUPPORTED_ACTS = (nn.PReLU, nn.LeakyReLU, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.SiLU, nn.GELU, nn.ELU)
_ADDS = {operator.add, operator.iadd, torch.add}
_CATS = {torch.cat, torch.concat}
_MERGES = {operator.mul, torch.mul}
# ops through which a tensor stays on its quantiser's grid
_TRANSPARENT_MODULES = (nn.Flatten, nn.Dropout, nn.Identity, nn.MaxPool2d)
_TRANSPARENT_FUNCS = {torch.flatten, torch.reshape, F.dropout, F.max_pool2d, torch.squeeze, torch.unsqueeze}
_TRANSPARENT_METHODS = {"view", "reshape", "flatten", "contiguous", "squeeze", "unsqueeze"}


class PACTTracer(fx.Tracer):
    """An fx tracer that keeps PACT modules as leaves (for F2T, which re-traces fake-quantised nets)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (*PACT_MODULES, PACTIntegerAdd, PACTIntegerConcat)) or super().is_leaf_module(m, qualname)


def trace_fake(net: nn.Module) -> fx.GraphModule:
    """`net` as a GraphModule with PACT modules as leaves (a GraphModule from F2F is returned as is)."""
    if isinstance(net, fx.GraphModule):
        return net
    graph = PACTTracer().trace(net)
    return fx.GraphModule(net, graph, type(net).__name__)


def float_to_fake(net: nn.Module, cfg: QuantConfig, example_input: Tensor) -> fx.GraphModule:
    """A fake-quantised copy of `net` (see the module docstring); `example_input` is one input batch."""
    training = net.training
    try:
        gm = fx.symbolic_trace(copy.deepcopy(net))
    except Exception as e:  # fx raises several types; the net's code is the problem either way
        raise RuntimeError(f"float_to_fake: cannot trace {type(net).__name__} with torch.fx: {e}") from e
    _reject_unsupported(gm)
    if cfg.fold_bn:
        gm.eval()
        gm = fold_batchnorm(gm, inplace=True)
    pool_signed = _pool_input_signed(gm, example_input)

    w_kw = dict(
        n_levels=cfg.weight_levels,
        granularity=cfg.weight_granularity,
        init=cfg.weight_init,
        learn_clip=cfg.weight_learn_clip,
        init_clip=cfg.weight_clip,
        nb_std=cfg.nb_std,
        percentile=cfg.percentile,
    )
    replaced: set[str] = set()
    for node in list(gm.graph.nodes):
        if node.op == "call_module":
            m = gm.get_submodule(node.target)
            if type(m) is nn.Conv2d and node.target not in replaced:
                _set_submodule(gm, node.target, PACTConv2d.from_float(m, **w_kw))
                replaced.add(node.target)
            elif type(m) is nn.Linear and node.target not in replaced:
                _set_submodule(gm, node.target, PACTLinear.from_float(m, **w_kw))
                replaced.add(node.target)
            elif type(m) in (nn.ReLU, nn.ReLU6) or (isinstance(m, PACTUnsignedAct) and node.target in replaced):
                kind: ActKind = "relu6" if type(m) is nn.ReLU6 else "relu"
                if node.target not in replaced:
                    _set_submodule(gm, node.target, _act(cfg, signed=False, kind=kind))
                    replaced.add(node.target)
                else:  # a second call of the same module: its own quantiser
                    first = gm.get_submodule(node.target)
                    assert isinstance(first, _PACTActivation)  # the quantiser that replaced it
                    node.target = _add_submodule(gm, node.target, _act(cfg, signed=False, kind=first.act_kind))
                    replaced.add(node.target)
            elif isinstance(m, _POOLS) and cfg.quantise_pool_output:
                signed = pool_signed.get(node.target, False)
                name = _add_submodule(gm, f"{node.target}_quant", _act(cfg, signed=signed, kind="identity"))
                _insert_after(gm, node, name)
        elif node.op in ("call_function", "call_method") and (relu_kind := _relu_kind(node)) is not None:
            name = _add_submodule(gm, node.name, _act(cfg, signed=False, kind=relu_kind))
            with gm.graph.inserting_after(node):
                new = gm.graph.call_module(name, (node.args[0],))
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)

    _harmonise_adds(gm, cfg)
    _harmonise_concats(gm, cfg)
    _insert_input_quantiser(gm, cfg)
    _quantise_linear_inputs(gm, cfg)
    gm.graph.lint()
    gm.recompile()

    gm.eval()
    with torch.no_grad():
        gm(example_input)  # fails here, not in training, if the rewrite broke shapes
    reset_observers(gm)
    gm.train(training)
    return gm


def reset_observers(net: nn.Module) -> None:
    """Forget the statistics every activation quantiser in `net` has recorded."""
    for m in net.modules():
        if isinstance(m, _PACTActivation):
            m.observer.reset()


# --------------------------------------------------------------------------------------------------
# helpers


@overload
def _act(cfg: QuantConfig, signed: Literal[True], kind: ActKind) -> PACTSignedAct: ...


@overload
def _act(cfg: QuantConfig, signed: bool, kind: ActKind) -> _PACTActivation: ...


def _act(cfg: QuantConfig, signed: bool, kind: ActKind) -> _PACTActivation:
    cls = PACTSignedAct if signed else PACTUnsignedAct
    return cls(
        n_levels=cfg.act_levels,
        init=cfg.act_init,
        init_clip=cfg.act_clip,
        learn_clip=cfg.act_learn_clip,
        rounding=cfg.act_rounding,
        act_kind=kind,
        nb_std=cfg.nb_std,
        percentile=cfg.percentile,
    )


def _relu_kind(node: fx.Node) -> ActKind | None:
    if node.op == "call_function" and node.target in _RELU_FUNCS:
        return _RELU_FUNCS[node.target]
    if node.op == "call_method" and node.target in ("relu", "relu_"):
        return "relu"
    return None


def _reject_unsupported(gm: fx.GraphModule) -> None:
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), _UNSUPPORTED_ACTS):
            m = gm.get_submodule(node.target)
            raise NotImplementedError(f"float_to_fake: {node.target} ({type(m).__name__}) has no PACT replacement; use ReLU or ReLU6")
        if node.op == "call_function" and (node.target in _MERGES or (node.target in _ADDS and node.kwargs)):
            if len(node.all_input_nodes) >= 2:
                raise NotImplementedError(
                    f"float_to_fake: {node.name} merges two tensors by {getattr(node.target, '__name__', node.target)}; "
                    "only residual adds (a + b) and concatenations (torch.cat) are harmonised: products are not"
                )


def _pool_input_signed(gm: fx.GraphModule, example_input: Tensor) -> dict[str, bool]:
    """For each average pooling, whether its input went negative on `example_input` (float net, eval)."""
    seen: dict[str, bool] = {}
    hooks = []
    for name, m in gm.named_modules():
        if isinstance(m, _POOLS):
            hooks.append(
                m.register_forward_hook(
                    lambda mod, inp, out, name=name: seen.__setitem__(name, seen.get(name, False) or bool((inp[0] < 0).any()))
                )
            )
    was_training = gm.training
    gm.eval()
    try:
        with torch.no_grad():
            gm(example_input)
    finally:
        for h in hooks:
            h.remove()
        gm.train(was_training)
    return seen


def _harmonise_adds(gm: fx.GraphModule, cfg: QuantConfig) -> None:
    """Every add of two tensors becomes a `PACTIntegerAdd` (``<node>`` module): one signed quantiser
    on both inputs, so that the integer sum is exact (QuantLib's add harmonisation)."""
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in _ADDS or len(node.args) != 2:
            continue
        if not all(isinstance(a, fx.Node) for a in node.args):
            continue  # adding a constant: not a residual
        name = _add_submodule(gm, node.name, PACTIntegerAdd(_act(cfg, signed=True, kind="identity")))
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(name, tuple(node.args))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)


def _harmonise_concats(gm: fx.GraphModule, cfg: QuantConfig) -> None:
    """Every ``torch.cat`` of tensors becomes a `PACTIntegerConcat` (``<node>`` module): one signed
    quantiser on all inputs, so the concatenated codes share a grid (QuantLib's harmonisation)."""
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in _CATS:
            continue
        tensors = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        if not isinstance(tensors, (list, tuple)) or not all(isinstance(t, fx.Node) for t in tensors) or not isinstance(dim, int):
            raise NotImplementedError(f"float_to_fake: {node.name}: only torch.cat of a list of tensors along a fixed dim is supported")
        name = _add_submodule(gm, node.name, PACTIntegerConcat(_act(cfg, signed=True, kind="identity"), dim))
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(name, tuple(tensors))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)


def _set_submodule(gm: fx.GraphModule, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, name, module)


def _add_submodule(gm: fx.GraphModule, target: str, module: nn.Module) -> str:
    """Register `module` under `target`, or `target_1`, `target_2`... if taken; return the name used."""
    base, name, k = target, target, 0
    while True:
        try:
            gm.get_submodule(name)
        except AttributeError:
            break
        k += 1
        name = f"{base}_{k}"
    gm.add_submodule(name, module)
    return name


def _insert_after(gm: fx.GraphModule, node: fx.Node, module_name: str) -> fx.Node:
    users = list(node.users)
    with gm.graph.inserting_after(node):
        new = gm.graph.call_module(module_name, (node,))
    for u in users:
        u.replace_input_with(node, new)
    return new


def _insert_input_quantiser(gm: fx.GraphModule, cfg: QuantConfig) -> None:
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ValueError(f"float_to_fake: the network must take exactly one input tensor (got {len(placeholders)})")
    if cfg.input_clip is not None:
        q = input_quantiser(cfg.input_levels, cfg.input_clip, signed=cfg.input_signed, rounding=cfg.input_rounding)
    else:
        q = PACTSignedAct(
            n_levels=cfg.input_levels,
            init=cfg.act_init,
            init_clip=cfg.act_clip,
            learn_clip=cfg.act_learn_clip,
            rounding=cfg.act_rounding,
            act_kind="identity",
            nb_std=cfg.nb_std,
            percentile=cfg.percentile,
        )
    name = _add_submodule(gm, "input_quant", q)
    _insert_after(gm, placeholders[0], name)


def _on_grid(gm: fx.GraphModule, node: Any) -> bool:
    """Whether `node`'s value is on some activation quantiser's grid (through shape-only ops)."""
    while isinstance(node, fx.Node):
        if node.op == "call_module":
            assert isinstance(node.target, str)  # a call_module node's target is the module's qualified name
            m = gm.get_submodule(node.target)
            if isinstance(m, (*PACT_ACTIVATIONS, PACTIntegerAdd, PACTIntegerConcat)):
                return True
            if not isinstance(m, _TRANSPARENT_MODULES):
                return False
        elif node.op == "call_function" and node.target in _TRANSPARENT_FUNCS:
            pass
        elif node.op == "call_method" and node.target in _TRANSPARENT_METHODS:
            pass
        else:
            return False
        node = node.args[0] if node.args else None
    return False


def _quantise_linear_inputs(gm: fx.GraphModule, cfg: QuantConfig) -> None:
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), (PACTConv2d, PACTLinear)):
            continue
        src = node.args[0]
        if _on_grid(gm, src):
            continue
        name = _add_submodule(gm, f"{node.target}_in_quant", _act(cfg, signed=True, kind="identity"))
        with gm.graph.inserting_before(node):
            new = gm.graph.call_module(name, (src,))
        node.replace_input_with(src, new)
