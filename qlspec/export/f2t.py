"""Fake-to-true (F2T): a PACT fake-quantised network -> the qlspec integer `Graph` (QuantLib's
IntegerizePACTNetPass), the one IR that the exporters, the converter and every backend share.

`fake_to_true(fq, input_shape=..., samples=x)` walks the torch.fx graph of `fq` (chains, residual
adds and concatenations harmonised by `qlspec.quant.f2f`) and tracks, for every value, either

- a *grid* tensor: integers ``q`` with real value ``eps * q`` (quantiser outputs, the input), or
- an *accumulator*: integers ``a`` with real value ``scale * a + offset`` (``scale``/``offset`` per
  output channel): a conv/linear output (``scale = eps_w * eps_in``, ``offset = bias``), then any
  BatchNorm folded in (``scale *= g``, ``offset = g*(offset - mean) + beta``, ``g = w/sqrt(var+eps)``),
  or an average pool's window sum (``scale = eps_in / k``).

The graph's input is the float image tensor ``image``; its first node is the input quantiser
(`Quantise` with the fake quantiser's own rule and float32 arithmetic: ``floor(x/eps)`` for PACT,
``floor(x/eps + 1/2)`` with rounding), whose output ``input`` is what an exported file takes. An
activation quantiser (``eps_out``, levels ``[lo, hi]``) on an accumulator becomes ``RequantShift``:
``q = clip(floor((a*mul + add + div/2) / div), lo, hi)``, ``div = 2**D``, with

    mul = round(scale / eps_out * 2**D)
    add = round(offset / eps_out * 2**D) - (2**(D-1) unless act.rounding)

(`qlspec.export.requant`: floor, or half up with rounding, of the exact real value, up to the
constants' derived representation error; no tolerance). This is QuantLib's ``bn_act_to_requant_fun``
with the conv bias merged into the BN (its InsertBNBetweenBiasedConvAndActsPass + MergeConvBNPass), so a biased conv
from PTQ's BN folding and a conv -> BN -> act from QAT take the same path. A quantiser on a grid
tensor is the same with ``scale = eps_in``, ``offset = 0``, and is dropped when ``eps_in == eps_out``
(QuantLib's ``skip_identity_rqs``). Intermediate convolutions therefore carry no bias and
intermediate linears a zero bias (QuantLib's ``integerize_pact_linear_fun`` keeps one "to avoid
MatMul"); the network's last linear layer, whose accumulator is the output ``output``, keeps
``bias_int = round(bias / (eps_w*eps_in))`` (``get_bias_int``), and then
``output_eps = eps_w * eps_in`` per output. An average pool is a `SumPool`/`GlobalSumPool` (window
sums) and its requantiser's ``mul`` applies to the sum.

Each requantiser's D is the largest for which ``a*mul + add`` (and ``+ div/2``) stays within
``2**31 / headroom`` over the accumulator values `samples` produce (read from the fake-quantised net),
or over every value the accumulator can take without samples, so Deeploy's and DORY's int32
kernels run the file; `requant_bits` fixes D instead (QuantLab's fixed D). `Integerised.fits` holds
each requantiser's D, multiplier precision and headroom. F2T fails, never clamps, when an
accumulator or the output bias cannot fit int32.

QuantLab exports store every constant in float32, so F2T rounds each `mul` and `add` to the nearest
integer that float32 holds exactly (in both requant spellings: ``add`` and ``add + 2**(D-1)``, and
``mul * k`` after a pool of k values): the graph and the exported files then hold the same
integers. This moves a constant by at most ``2**-24`` of its magnitude (nothing for usual values).
A Flatten between an average pool and its quantiser is moved after the requantisation (per-tensor
`mul`/`add`, so the result is the same), because the exported graphs need a pool to feed its
requantiser directly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import NoReturn

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from qlspec.engine.ops.quantise import Quantise
from qlspec.engine.run import run_graph
from qlspec.errors import ExportError, GraphError
from qlspec.export import requant
from qlspec.graph.ir import Graph, Node, TensorInfo, make_graph, narrow
from qlspec.quant.f2f import trace_fake
from qlspec.quant.pact import PACT_ACTIVATIONS, PACTConv2d, PACTIntegerAdd, PACTIntegerConcat, PACTLinear, _PACTActivation

INT32 = (-(2**31), 2**31 - 1)
_INT64_SAFE = 2**62
_SHAPE_MODULES = (nn.Flatten,)
_ALIAS_MODULES = (nn.Dropout, nn.Identity)
_SHAPE_FUNCS = {torch.flatten, torch.reshape}
_ALIAS_FUNCS = {F.dropout}
_SHAPE_METHODS = {"view", "reshape", "flatten"}
_ALIAS_METHODS = {"contiguous"}
_IGNORED_METHODS = {"size", "dim"}

IMAGE, INPUT, OUTPUT = "image", "input", "output"
POOLS = ("SumPool", "GlobalSumPool")


@dataclass(frozen=True, eq=False)
class Integerised:
    """What F2T gives: the integer `graph` and what the graph itself does not say about real values.

    `graph`: input ``image`` (float32, the normalised image), first node `Quantise` -> ``input``,
    last tensor ``output``. `eps`: per integer tensor, its eps (real value = eps * integer; shape
    ``()`` or ``(C,)`` on axis 1); for a pool's window sum, eps of the *sum* (``eps_in / k``).
    `sources`: per node, the fx node / module of the fake-quantised net it comes from (requantisers:
    the activation quantiser). `requant_bits`: the fixed D of every ``div = 2**D``, or None when each
    requantiser's D was fitted for int32. `fits`: per requantiser, its D, multiplier precision and
    int32 headroom (`qlspec.export.requant.RequantFit`), in graph order.
    """

    graph: Graph
    eps: Mapping[str, np.ndarray]
    sources: Mapping[str, str]
    requant_bits: int | None
    fits: tuple[requant.RequantFit, ...] = ()

    @cached_property
    def input_quantiser(self) -> Node:
        (node,) = [n for n in self.graph.nodes if n.op == "Quantise"]
        return node

    @property
    def input_eps(self) -> float:
        return float(self.input_quantiser.attr("eps"))

    @property
    def input_info(self) -> TensorInfo:
        return self.graph.info(INPUT)

    @property
    def output_eps(self) -> np.ndarray:
        """eps of the integer output: real output = output_eps * integer output (per channel on axis 1)."""
        return np.asarray(self.eps[OUTPUT])

    def quantise_input(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """The integer input (int64) for float images `x`: the graph's own `Quantise` node."""
        return Quantise.from_node(self.input_quantiser).run(_numpy(x))

    def run(self, x: torch.Tensor | np.ndarray, *, batch: int = 64, engine: str = "reference") -> np.ndarray:
        """The integer output (int64) of the graph for float images `x`: run by the reference engine
        (rung TQ), or with ``engine="torch"`` by `qlspec.engine.torch_run` (rung FQI, on any torch device)."""
        from qlspec.engine.torch_run import run_graph_torch

        runners: dict[str, Callable[[Graph, Mapping[str, np.ndarray]], dict[str, np.ndarray]]]
        runners = {"reference": run_graph, "torch": run_graph_torch}
        runner = runners[engine]
        x = _numpy(x)
        return np.concatenate([runner(self.graph, {IMAGE: x[s : s + batch]})[OUTPUT] for s in range(0, len(x), batch)]).astype(np.int64)

    def integer_graph(self) -> Graph:
        """The graph without its input quantiser: input ``input`` (integer), what an exported file holds."""
        q = self.input_quantiser
        nodes = [n for n in self.graph.nodes if n is not q]
        return make_graph(self.graph.name, {INPUT: self.input_info}, nodes, self.graph.constants, self.graph.outputs)


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@dataclass(frozen=True)
class _Val:
    """What F2T knows about an fx value (see the module docstring)."""

    kind: str  # "float" (the raw input), "grid", "acc"
    name: str = ""  # the graph tensor holding it
    shape: tuple[int, ...] = ()
    lo: int = 0
    hi: int = 0
    eps: np.ndarray | None = None  # grid tensors
    scale: np.ndarray | None = None  # accumulators
    offset: np.ndarray | None = None
    linear: int | None = None  # index of the conv/linear node whose untouched accumulator this is
    bound: np.ndarray | None = None  # accumulators: per-channel bound on |a| (sum of |w| times the largest input code)
    pool_k: int = 1
    deferred: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (fx name, shape) of Flatten(s) after the pool's requantiser


def fake_to_true(
    fq: nn.Module,
    *,
    input_shape: Sequence[int],
    requant_bits: int | None = None,
    samples: torch.Tensor | np.ndarray | None = None,
    headroom: float = 2.0,
) -> Integerised:
    """The integer graph of the fake-quantised `fq` (not modified).

    `input_shape`: the network input's shape, e.g. ``(1, 3, 120, 120)`` (average-pool window sizes and
    tensor shapes come from it). Each requantiser's D (``div = 2**D``) is `requant_bits` when given
    (QuantLab's fixed D), else fitted for int32 kernels (`qlspec.export.requant`): the largest D whose
    ``x*mul + add`` stays within ``2**31 / headroom`` for every accumulator value the network produces
    on `samples` (float images), or, without samples, for every value the accumulator can take.
    Every quantiser must be started. Raises `ExportError` naming the fx node for anything QuantLib's
    integerisation does not cover.
    """
    if requant_bits is not None and not 1 <= requant_bits <= 40:
        raise ExportError(f"requant_bits must be in 1..40 (got {requant_bits})", where="export")
    if not headroom >= 1:
        raise ExportError(f"headroom must be >= 1 (got {headroom})", where="export")
    gm = trace_fake(fq)
    _check_started(gm)
    shape = (1, *tuple(input_shape)[1:])
    was_training = gm.training
    gm.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(shape))
    finally:
        gm.train(was_training)

    def walk(plan: Mapping[str, int]) -> _Walker:
        w = _Walker(gm, shape, fixed=requant_bits, plan=plan, headroom=headroom)
        w.run()
        return w

    w = walk({})
    if samples is None:
        return w.result({})
    seen = observe_accumulators(gm, w, _numpy(samples))
    # the float32 estimate may step a unit past what the accumulator can hold: keep it inside
    seen = {name: (np.maximum(lo, w.requants[name].worst[0]), np.minimum(hi, w.requants[name].worst[1])) for name, (lo, hi) in seen.items()}
    if requant_bits is None:
        w = walk({name: r.shift_for(*seen[name], headroom) for name, r in w.requants.items()})
    return w.result(seen)


@torch.no_grad()
def observe_accumulators(gm: fx.GraphModule, w: _Walker, x: np.ndarray, batch: int = 128) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per requantiser: the smallest and largest accumulator value per channel (shaped like its
    constants, or one scalar pair when the shapes differ) over the float images `x`.

    Read from the fake-quantised net: the input of the requantiser's activation quantiser is
    ``scale*a + offset`` in float32, so ``a = (input/eps_out - bias) / ratio``, within float32's
    relative error (~1e-6 of |a|) of the integer network's own accumulator."""
    by_call: dict[str, dict[int, str]] = {}
    for name, r in w.requants.items():
        module, call = _module_call(r.source)
        by_call.setdefault(module, {})[call] = name
    seen: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    hooks = []
    counters: dict[str, int] = {}
    for module, calls in by_call.items():

        def pre(mod, args, module=module, calls=calls):
            name = calls.get(counters.get(module, 0))
            counters[module] = counters.get(module, 0) + 1
            if name is None:
                return
            r = w.requants[name]
            eps_out = float(mod.get_eps())
            v = args[0].detach()
            axes = tuple(i for i in range(v.dim()) if i != 1)  # extremes in v's dtype, then float64: exact, no float64 copy of v
            lo, hi = (e.double().numpy() for e in (v.amin(dim=axes), v.amax(dim=axes)))
            ratio = r.ratio.reshape(-1) if r.ratio.size == lo.size else r.ratio
            bias = r.bias.reshape(-1) if r.bias.size == lo.size else r.bias
            with np.errstate(divide="ignore", invalid="ignore"):  # a channel with ratio 0 ignores its accumulator
                ends = [np.nan_to_num((e / eps_out - bias) / ratio, nan=0.0, posinf=0.0, neginf=0.0) for e in (lo, hi)]
            a_lo, a_hi = np.floor(np.minimum(*ends)), np.ceil(np.maximum(*ends))
            if a_lo.size == r.ratio.size and r.ratio.size > 1:
                a_lo, a_hi = a_lo.reshape(r.ratio.shape), a_hi.reshape(r.ratio.shape)
            else:
                a_lo, a_hi = np.asarray(a_lo.min()), np.asarray(a_hi.max())
            if name in seen:
                a_lo, a_hi = np.minimum(a_lo, seen[name][0]), np.maximum(a_hi, seen[name][1])
            seen[name] = (a_lo.astype(np.int64), a_hi.astype(np.int64))

        hooks.append(gm.get_submodule(module).register_forward_pre_hook(pre))
    was_training = gm.training
    gm.eval()
    try:
        with torch.no_grad():  # a forward pass with the learned bounds' autograd graph held 3 GB on the default app
            for s in range(0, len(x), batch):
                counters.clear()
                gm(torch.from_numpy(np.ascontiguousarray(x[s : s + batch], np.float32)))
    finally:
        gm.train(was_training)
        for h in hooks:
            h.remove()
    missing = sorted(set(w.requants) - set(seen))
    if missing:
        raise ExportError(f"requantisers {missing} never ran on the samples", where="export")
    return seen


def _module_call(source: str) -> tuple[str, int]:
    """F2T's source of a requantiser: ``module`` or ``module[k]`` (the k-th call of a shared quantiser)."""
    if source.endswith("]") and "[" in source:
        name, _, k = source[:-1].rpartition("[")
        return name, int(k)
    return source, 0


def _check_started(gm: nn.Module) -> None:
    for name, m in gm.named_modules():
        if isinstance(m, (*PACT_ACTIVATIONS, PACTConv2d, PACTLinear)) and not bool(m.started):
            raise ExportError("quantiser not started: the network is still in float mode (run QAT or PTQ first)", where=name)


def _src(node: fx.Node) -> str:
    return str(node.target) if node.op == "call_module" else node.name


def _f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def _scalar_or_channels(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64).reshape(-1)
    return a.reshape(()) if a.size == 1 else a


def _per_channel(values: np.ndarray, ndim: int) -> np.ndarray:
    """A requantiser constant shaped for the IR's broadcasting: ``()`` per tensor, ``(C,1,1)`` per
    channel of NCHW, ``(C,)`` per column of (N, C) (QuantLib stores them the same way)."""
    v = np.asarray(values)
    if v.ndim == 0 or v.size == 1:
        return v.reshape(())
    return v.reshape((-1,) + (1,) * (ndim - 2))


def _pair(x) -> tuple[int, int]:
    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)


@dataclass(frozen=True)
class _Requant:
    """One requantiser as F2T made it: ``real/eps_out = ratio*a + bias`` (`rounding`: half up, else
    floor; `k`: the pool window whose sum `a` is), the worst-case accumulator range, D and constants."""

    source: str
    ratio: np.ndarray
    bias: np.ndarray
    rounding: bool
    k: int
    worst: tuple[np.ndarray, np.ndarray]
    shift: int
    mul: np.ndarray
    add: np.ndarray

    def shift_for(self, lo: np.ndarray, hi: np.ndarray, headroom: float) -> int:
        return requant.choose_shift(self.ratio, self.bias, lo, hi, rounding=self.rounding, k=self.k, headroom=headroom)

    def peak(self, lo: np.ndarray, hi: np.ndarray) -> int:
        return requant.peak(self.mul, self.add, self.shift, lo, hi)

    def fit(self, name: str, seen: tuple[np.ndarray, np.ndarray] | None) -> requant.RequantFit:
        return requant.RequantFit(
            name,
            self.source,
            self.shift,
            requant.significant_bits(self.mul),
            None if seen is None else self.peak(*seen),
            self.peak(*self.worst),
        )


class _Walker:
    def __init__(
        self, gm: fx.GraphModule, input_shape: tuple[int, ...], *, fixed: int | None, plan: Mapping[str, int], headroom: float
    ) -> None:
        self.gm = gm
        self.fixed = fixed
        self.plan = plan
        self.headroom = headroom
        self.requants: dict[str, _Requant] = {}
        self.out: str | None = None
        self.image_shape = input_shape
        self.nodes: list[Node] = []
        self.constants: dict[str, np.ndarray] = {}
        self.eps: dict[str, np.ndarray] = {}
        self.sources: dict[str, str] = {}
        self.vals: dict[fx.Node, _Val] = {}
        self.quantised = False

    # -- helpers ---------------------------------------------------------------------------------
    def fail(self, node: fx.Node, message: str) -> NoReturn:
        raise ExportError(message, where=f"node {node.name}" + (f" ({node.target})" if node.op == "call_module" else ""))

    def shape(self, node: fx.Node) -> tuple[int, ...]:
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            self.fail(node, "no shape known (the node does not produce one tensor)")
        return tuple(int(s) for s in meta.shape)

    def const(self, name: str, value: np.ndarray) -> str:
        self.constants[name] = narrow(np.asarray(value, np.int64))
        return name

    def emit(self, op: str, name: str, inputs: list[str], source: str, eps: np.ndarray | None, **attrs) -> str:
        """Add one node whose single output tensor is named like the node."""
        self.nodes.append(Node.make(op, name, inputs, [name], **attrs))
        self.sources[name] = source
        if eps is not None:
            self.eps[name] = np.asarray(eps, np.float64)
        return name

    def source_val(self, node: fx.Node) -> _Val:
        srcs = [a for a in node.args if isinstance(a, fx.Node) and a in self.vals]
        if not srcs:
            self.fail(node, "has no tensor input F2T knows")
        return self.vals[srcs[0]]

    # -- the walk --------------------------------------------------------------------------------
    def run(self) -> None:
        out = None
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                if self.vals:
                    self.fail(node, "the network must take exactly one input tensor")
                self.vals[node] = _Val("float", IMAGE, self.image_shape)
            elif node.op == "output":
                arg = node.args[0]
                if not isinstance(arg, fx.Node):
                    self.fail(node, "the network must return exactly one tensor")
                out = self.finish(node, self.vals[arg])
            elif node.op == "call_method" and node.target in _IGNORED_METHODS:
                continue
            elif node.op == "call_function" and node.target is getattr:
                continue
            elif node.op == "call_module":
                self.module(node, self.gm.get_submodule(node.target))
            elif (node.op == "call_function" and node.target in _ALIAS_FUNCS) or (
                node.op == "call_method" and node.target in _ALIAS_METHODS
            ):
                self.vals[node] = self.source_val(node)
            elif (node.op == "call_function" and node.target in _SHAPE_FUNCS) or (
                node.op == "call_method" and node.target in _SHAPE_METHODS
            ):
                self.reshape(node, self.source_val(node))
            else:
                self.fail(node, f"unsupported operation {node.op} {getattr(node.target, '__name__', node.target)!r} in an integer network")
        if not self.quantised:
            raise ExportError("the network has no input quantiser", where="export")
        if out is None or not self.nodes or out != self.nodes[-1].outputs[0]:
            raise ExportError("the network output is not its last layer's result", where="export")
        last = self.nodes[-1]
        self.nodes[-1] = Node(last.op, last.name, last.inputs, (OUTPUT,), last.attrs)
        self.eps[OUTPUT] = self.eps.pop(out)

    @cached_property
    def _graph(self) -> Graph:
        image = TensorInfo(self.image_shape, 32, True, is_float=True)
        try:
            return make_graph("qlspec", {IMAGE: image}, self.nodes, self.constants, [OUTPUT])
        except GraphError as e:
            raise ExportError(f"F2T built an inconsistent graph: {e}", where="export") from None

    def graph(self) -> Graph:
        return self._graph

    def result(self, seen: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Integerised:
        """The Integerised graph, with each requantiser's int32 fit (observed on `seen`, if any)."""
        fits = tuple(r.fit(name, seen.get(name)) for name, r in self.requants.items())
        return Integerised(self._graph, dict(self.eps), dict(self.sources), self.fixed, fits)

    def module(self, node: fx.Node, m: nn.Module) -> None:
        if isinstance(m, (PACTIntegerAdd, PACTIntegerConcat)):
            self.integer_merge(node, m)
            return
        v = self.source_val(node)
        if isinstance(m, _PACTActivation):
            if v.kind == "float":
                self.input_quantiser(node, m, v)
            else:
                self.activation(node, m, v)
        elif isinstance(m, (PACTConv2d, PACTLinear)):
            self.linear(node, m, v)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            self.batchnorm(node, m, v)
        elif isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            self.avgpool(node, m, v)
        elif isinstance(m, nn.MaxPool2d):
            self.maxpool(node, m, v)
        elif isinstance(m, _SHAPE_MODULES):
            self.reshape(node, v)
        elif isinstance(m, _ALIAS_MODULES):
            self.vals[node] = v
        else:
            self.fail(
                node,
                f"{type(m).__name__} has no integer form (supported: PACT quantisers and convolutions/linears, "
                "BatchNorm, average and max pooling, flatten)",
            )

    def input_quantiser(self, node: fx.Node, m: _PACTActivation, v: _Val) -> None:
        if self.quantised:
            self.fail(node, "a second quantiser on the float input")
        eps = _scalar_or_channels(_f64(m.get_eps()))
        if eps.ndim:
            self.fail(node, "the input quantiser must have one eps for the whole tensor")
        lo, hi = m.int_range
        self.nodes.append(Node.make("Quantise", _src(node), [IMAGE], [INPUT], eps=float(eps), lo=lo, hi=hi, rounding=m.rule))
        self.sources[_src(node)] = _src(node)
        self.eps[INPUT] = eps
        self.quantised = True
        self.vals[node] = _Val("grid", INPUT, self.shape(node), lo, hi, eps=eps)

    def linear(self, node: fx.Node, m: PACTConv2d | PACTLinear, v: _Val) -> None:
        if v.kind != "grid":
            self.fail(node, "the input of a convolution/linear must be a quantiser's output (insert an activation quantiser)")
        assert v.eps is not None  # a grid value carries its eps
        if v.eps.ndim:
            self.fail(node, "per-channel input eps is not supported")
        w = m.weight_int.detach().cpu().numpy().astype(np.int64)
        eps_w = _f64(m.get_eps_w()).reshape(-1)
        scale = _scalar_or_channels(eps_w * float(v.eps))
        offset = _f64(m.bias) if m.bias is not None else np.zeros(())
        qmax = max(abs(v.lo), abs(v.hi))
        per_channel = np.abs(w).reshape(w.shape[0], -1).sum(1) * qmax
        bound = int(per_channel.max(initial=0))
        if bound > INT32[1]:
            self.fail(node, f"the accumulator can reach {bound}, beyond int32")
        name = node.name
        weight = self.const(f"{name}.weight", w)
        if isinstance(m, PACTConv2d):
            if m.padding_mode != "zeros" or isinstance(m.padding, str):
                self.fail(node, f"padding {m.padding!r} / mode {m.padding_mode!r}: only explicit zero padding is supported")
            p = tuple(m.padding)
            self.emit(
                "Conv",
                name,
                [v.name, weight],
                _src(node),
                scale,
                strides=tuple(m.stride),
                pads=(p[0], p[1], p[0], p[1]),
                dilations=tuple(m.dilation),
                group=m.groups,
            )
        else:
            if len(v.shape) != 2:
                self.fail(node, f"a linear layer needs a 2-D input (got shape {list(v.shape)})")
            bias = self.const(f"{name}.bias", np.zeros(w.shape[0], np.int64))
            self.emit("Gemm", name, [v.name, weight, bias], _src(node), scale, trans_a=False, trans_b=True)
        self.vals[node] = _Val(
            "acc",
            name,
            self.shape(node),
            -bound,
            bound,
            scale=scale,
            offset=_scalar_or_channels(offset),
            linear=len(self.nodes) - 1,
            bound=per_channel,
        )

    def batchnorm(self, node: fx.Node, bn: nn.BatchNorm2d | nn.BatchNorm1d, v: _Val) -> None:
        if v.kind != "acc":
            self.fail(node, "BatchNorm must follow a convolution/linear (F2T folds it into the requantisation)")
        if not bn.track_running_stats or bn.running_mean is None or bn.running_var is None:
            self.fail(node, "BatchNorm without running statistics cannot be folded")
        assert v.scale is not None and v.offset is not None  # an accumulator carries its scale and offset
        g = _f64(bn.weight) if bn.affine else np.ones(bn.num_features)
        b = _f64(bn.bias) if bn.affine else np.zeros(bn.num_features)
        gamma = g / np.sqrt(_f64(bn.running_var) + bn.eps)
        scale = v.scale * gamma
        offset = gamma * (v.offset - _f64(bn.running_mean)) + b
        self.vals[node] = dataclasses.replace(v, scale=scale, offset=offset, linear=None)

    def activation(self, node: fx.Node, act: _PACTActivation, v: _Val) -> None:
        t = self.requantise(node, node.name, act, v, _src(node))
        for i, (fx_name, shape) in enumerate(v.deferred):  # the flatten(s) after the pool, now after its requantiser
            flat = f"{node.name}_flat{i}" if i < len(v.deferred) - 1 else f"{node.name}_flat"
            self.emit("Flatten", flat, [t.name], fx_name, t.eps, axis=1)
            t = dataclasses.replace(t, name=flat, shape=shape)
        self.vals[node] = t

    def requantise(self, node: fx.Node, name: str, act: _PACTActivation, v: _Val, source: str) -> _Val:
        """`v` onto `act`'s grid: a RequantShift node `name`, or `v` itself for an identity requantisation."""
        eps_out = _scalar_or_channels(_f64(act.get_eps()))
        lo, hi = act.int_range
        if eps_out.ndim:
            self.fail(node, "per-channel activation eps is not supported")
        scale: np.ndarray | None
        offset: np.ndarray | None
        if v.kind == "grid":
            assert v.eps is not None  # a grid value carries its eps
            if np.array_equal(v.eps, eps_out) and lo <= v.lo and v.hi <= hi:
                return v  # identity requantisation (skip_identity_rqs)
            scale, offset = v.eps, np.zeros(())
        else:
            scale, offset = v.scale, v.offset
        assert scale is not None and offset is not None  # an accumulator carries its scale and offset
        ndim = len(v.shape)
        ratio, bias = np.broadcast_arrays(np.asarray(scale / float(eps_out)), np.asarray(offset / float(eps_out)))
        worst_lo, worst_hi = (-v.bound, v.bound) if v.bound is not None else (np.asarray(v.lo), np.asarray(v.hi))
        worst = (_per_channel(np.asarray(worst_lo), ndim), _per_channel(np.asarray(worst_hi), ndim))
        ratio, bias = _per_channel(ratio, ndim), _per_channel(bias, ndim)
        rounding = bool(act.rounding)
        if self.fixed is not None:
            shift = self.fixed
        elif name in self.plan:
            shift = self.plan[name]
        else:
            shift = requant.choose_shift(ratio, bias, *worst, rounding=rounding, k=v.pool_k, headroom=self.headroom)
        mul, add = requant.constants(ratio, bias, shift, rounding=rounding, k=v.pool_k)
        amax = max(abs(v.lo), abs(v.hi))
        bound = amax * int(np.abs(mul).max()) + int(np.abs(add).max()) + 2**shift
        if bound >= _INT64_SAFE:
            self.fail(node, f"x*mul + add can reach {bound}, beyond int64; use fewer requant_bits")
        self.requants[name] = _Requant(source, ratio, bias, rounding, v.pool_k, worst, shift, mul, add)
        self.emit(
            "RequantShift",
            name,
            [v.name, self.const(f"{name}.mul", mul), self.const(f"{name}.add", add)],
            source,
            eps_out,
            div=2**shift,
            lo=lo,
            hi=hi,
        )
        return _Val("grid", name, v.shape, lo, hi, eps=eps_out)

    def integer_merge(self, node: fx.Node, m: PACTIntegerAdd | PACTIntegerConcat) -> None:
        """A harmonised add or concatenation: every input onto the shared grid of ``act_in`` (one
        RequantShift each; the k-th call of the shared quantiser is source ``<module>.act_in[k]``),
        then the integer `Add` or `Concat`."""
        args = [a for a in node.args if isinstance(a, fx.Node)]
        add = isinstance(m, PACTIntegerAdd)
        if (len(args) != 2 if add else len(args) < 1) or any(a not in self.vals for a in args):
            self.fail(node, "a residual add takes two tensors F2T knows" if add else "a concatenation of tensors F2T does not know")
        vals = [self.vals[a] for a in args]
        if any(v.kind == "float" for v in vals) or any(v.deferred for v in vals):
            self.fail(node, "a residual add or concatenation needs quantised or accumulated tensors")
        if add and vals[0].shape != vals[1].shape:
            self.fail(node, f"a residual add of shapes {list(vals[0].shape)} and {list(vals[1].shape)}: no broadcasting")
        ins = [self.requantise(node, f"{node.name}_in{i}", m.act_in, v, f"{node.target}.act_in[{i}]") for i, v in enumerate(vals)]
        eps = ins[0].eps
        if add:
            self.emit("Add", node.name, [t.name for t in ins], _src(node), eps)
            lo, hi = ins[0].lo + ins[1].lo, ins[0].hi + ins[1].hi
        else:
            assert isinstance(m, PACTIntegerConcat)  # not an add: a concatenation
            rank = len(vals[0].shape)
            axis = m.dim % rank
            if axis == 0:
                self.fail(node, "concatenating along the batch axis")
            self.emit("Concat", node.name, [t.name for t in ins], _src(node), eps, axis=axis)
            lo, hi = min(t.lo for t in ins), max(t.hi for t in ins)
        self.vals[node] = _Val("grid", node.name, self.shape(node), lo, hi, eps=eps)

    def avgpool(self, node: fx.Node, m: nn.Module, v: _Val) -> None:
        """Window sums (`SumPool` / `GlobalSumPool`) of a grid tensor or of an accumulator (per
        channel scale and offset carry over: the mean of ``scale*a + offset`` is ``scale/k * sum + offset``)."""
        if v.kind not in ("grid", "acc") or v.pool_k > 1 or v.deferred:
            self.fail(node, "average pooling needs a quantiser's output or a convolution's accumulator as input")
        src = node.args[0]
        assert isinstance(src, fx.Node)  # source_val found it among the node's tensor inputs
        in_shape = self.shape(src)
        scale: np.ndarray | None
        offset: np.ndarray | None
        scale, offset = (v.eps, np.zeros(())) if v.kind == "grid" else (v.scale, v.offset)
        assert scale is not None and offset is not None  # a grid value carries its eps, an accumulator its scale and offset
        if isinstance(m, nn.AdaptiveAvgPool2d):
            size = m.output_size if isinstance(m.output_size, tuple) else (m.output_size, m.output_size)
            if tuple(size) != (1, 1):
                self.fail(node, f"AdaptiveAvgPool2d to {size}: only global pooling (output size 1) is supported")
            k = in_shape[2] * in_shape[3]
            self.emit("GlobalSumPool", node.name, [v.name], _src(node), scale / k)
        else:
            kernel, stride, pad = _pair(m.kernel_size), _pair(m.stride if m.stride is not None else m.kernel_size), _pair(m.padding)
            if m.ceil_mode or m.divisor_override is not None or (any(pad) and not m.count_include_pad):
                self.fail(node, "average pooling must have equal windows (no ceil_mode, no divisor_override, padding counted)")
            if v.kind == "acc" and any(pad) and np.any(v.offset != 0):
                self.fail(node, "average pooling with padding over an accumulator with an offset (bias or BatchNorm)")
            k = kernel[0] * kernel[1]
            self.emit(
                "SumPool",
                node.name,
                [v.name],
                _src(node),
                scale / k,
                kernel_shape=kernel,
                strides=stride,
                pads=(pad[0], pad[1], pad[0], pad[1]),
            )
        if max(abs(k * v.lo), abs(k * v.hi)) > INT32[1]:
            self.fail(node, f"the window sums can reach {max(abs(k * v.lo), abs(k * v.hi))}, beyond int32")
        self.vals[node] = _Val(
            "acc",
            node.name,
            self.shape(node),
            k * v.lo,
            k * v.hi,
            scale=np.asarray(scale) / k,
            offset=np.asarray(offset),
            pool_k=k,
            bound=None if v.bound is None else k * v.bound,
        )

    def maxpool(self, node: fx.Node, m: nn.MaxPool2d, v: _Val) -> None:
        if v.kind != "grid":
            self.fail(node, "max pooling needs a quantiser's output as input")
        p = _pair(m.padding)
        self.emit(
            "MaxPool",
            node.name,
            [v.name],
            _src(node),
            v.eps,
            kernel_shape=_pair(m.kernel_size),
            strides=_pair(m.stride if m.stride is not None else m.kernel_size),
            pads=(p[0], p[1], p[0], p[1]),
            dilations=_pair(m.dilation),
            ceil_mode=bool(m.ceil_mode),
        )
        self.vals[node] = dataclasses.replace(v, name=node.name, shape=self.shape(node))

    def reshape(self, node: fx.Node, v: _Val) -> None:
        src_shape, shape = v.shape if not v.deferred else v.deferred[-1][1], self.shape(node)
        if shape == src_shape:
            self.vals[node] = v
            return
        if len(src_shape) < 2 or shape != (src_shape[0], int(np.prod(src_shape[1:]))):
            self.fail(node, f"reshape {list(src_shape)} -> {list(shape)}: only flattening to (N, features) is supported")
        if v.kind == "acc" and v.pool_k > 1:  # move it after the pool's requantiser
            self.vals[node] = dataclasses.replace(v, deferred=v.deferred + ((_src(node), shape),))
            return
        spatial = int(np.prod(src_shape[2:]))
        if v.kind == "acc" and spatial != 1:
            assert v.scale is not None and v.offset is not None  # an accumulator carries its scale and offset
            if v.scale.ndim or v.offset.ndim:
                self.fail(node, "flattening a per-channel accumulator with spatial extent before its requantisation")
        self.emit("Flatten", node.name, [v.name], _src(node), v.eps if v.kind == "grid" else v.scale, axis=1)
        self.vals[node] = dataclasses.replace(v, name=node.name, shape=shape, linear=None if v.kind != "acc" else v.linear)

    def finish(self, node: fx.Node, v: _Val) -> str:
        if v.kind == "grid":
            if not self.nodes or v.name == INPUT:
                self.fail(node, "the network computes nothing")
            if self.nodes[-1].outputs[0] != v.name:
                self.fail(node, "the output must be the last layer's result")
            return v.name
        if v.kind != "acc" or v.linear is None or v.linear != len(self.nodes) - 1:
            self.fail(
                node,
                "the network output must be a quantiser's output or the accumulator of its last "
                "convolution/linear (a BatchNorm or pool before the output has no integer form)",
            )
        layer = self.nodes[v.linear]
        m = self.gm.get_submodule(self.sources[layer.name])
        assert isinstance(m, (PACTConv2d, PACTLinear))  # the accumulator is a convolution's or linear's
        if m.bias is not None:
            in_eps = float(self.eps[layer.inputs[0]])
            bias_int = m.get_bias_int(torch.tensor(in_eps))
            assert bias_int is not None  # the layer has a bias
            bias = bias_int.detach().cpu().double().numpy()
            if not np.all(np.isfinite(bias)) or np.abs(bias).max(initial=0) >= 2**24:
                self.fail(
                    node,
                    f"the integer bias reaches {float(np.abs(bias).max()):.6g} (bias / (eps_w*eps_in)), "
                    "beyond float32's exact integers (2**24): the layer's input eps is too small for its bias",
                )
            bias = bias.astype(np.int64)
            reach = int((v.bound + np.abs(bias)).max(initial=0))
            if reach > INT32[1]:
                self.fail(node, f"the output accumulator can reach {reach} (weights times inputs plus bias), beyond int32")
            name = self.const(f"{layer.name}.bias", bias)
            self.nodes[v.linear] = Node(layer.op, layer.name, (*layer.inputs[:2], name), layer.outputs, layer.attrs)
        return v.name
