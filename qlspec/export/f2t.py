"""Fake-to-true (F2T): a PACT fake-quantised network -> `IntegerNet` (QuantLib's IntegerizePACTNetPass).

`fake_to_true(fq, requant_bits=D, input_shape=...)` walks the torch.fx graph of `fq` (a chain: the
PACT library rejects residual adds and concatenations) and tracks, for every value, either

- a *grid* tensor: integers ``q`` with real value ``eps * q`` (quantiser outputs, the input), or
- an *accumulator*: integers ``a`` with real value ``scale * a + offset`` (``scale``/``offset`` per
  output channel): a conv/linear output (``scale = eps_w * eps_in``, ``offset = bias``), then any
  BatchNorm folded in (``scale *= g``, ``offset = g*(offset - mean) + beta``, ``g = w/sqrt(var+eps)``),
  or an average pool's window sum (``scale = eps_in / k``).

An activation quantiser (``eps_out``, levels ``[lo, hi]``) on an accumulator becomes
``RequantShift``: ``q = clip(floor((a*mul + add) / 2**D), lo, hi)`` with

    mul = round(scale / eps_out * 2**D)
    add = round((offset / eps_out + (0.5 if act.rounding else FLOOR_TOLERANCE)) * 2**D)

which is QuantLib's ``bn_act_to_requant_fun`` (plus the fake quantiser's flooring tolerance,
`qlspec.quant.pact.FLOOR_TOLERANCE`, so that TQ floors exactly where FQ does) with the conv bias merged into the BN (its
InsertBNBetweenBiasedConvAndActsPass + MergeConvBNPass), so a biased conv from PTQ's BN folding
and a conv -> BN -> act from QAT take the same path. `add` is kept in the floor form (see
`integer_net`). A quantiser on a grid tensor is the same with ``scale = eps_in``, ``offset = 0``,
and is dropped when ``eps_in == eps_out`` (QuantLib's ``skip_identity_rqs``). Intermediate
conv/linear layers therefore carry no bias; the network's last linear layer, whose accumulator is
the output, keeps ``bias_int = round(bias / (eps_w*eps_in))`` (``get_bias_int``), and then
``output_eps = eps_w * eps_in`` per output.

QuantLab exports store every constant in float32, so F2T rounds each `mul` and `add` to the nearest
integer that float32 holds exactly (in both requant spellings: `add` and ``add - 2**(D-1)``, and
``mul * k`` after a pool of k values): the TQ module and the exported files then hold the same
integers. This moves a constant by at most ``2**-24`` of its magnitude (nothing for usual values).
A Flatten between an average pool and its quantiser is moved after the requantisation (per-tensor
`mul`/`add`, so the result is the same), because the exported graphs need a pool to feed its
requantiser directly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from qlspec.errors import ExportError
from qlspec.export.integer_net import IntegerNet, Layer, TensorSpec
from qlspec.quant.f2f import trace_fake
from qlspec.quant.pact import FLOOR_TOLERANCE, PACT_ACTIVATIONS, PACTConv2d, PACTLinear, _PACTActivation

INT32 = (-(2**31), 2**31 - 1)
_INT64_SAFE = 2**62
_SHAPE_MODULES = (nn.Flatten,)
_ALIAS_MODULES = (nn.Dropout, nn.Identity)
_SHAPE_FUNCS = {torch.flatten, torch.reshape}
_ALIAS_FUNCS = {F.dropout}
_SHAPE_METHODS = {"view", "reshape", "flatten"}
_ALIAS_METHODS = {"contiguous"}
_IGNORED_METHODS = {"size", "dim"}


@dataclass(frozen=True)
class _Val:
    """What F2T knows about an fx value (see the module docstring)."""

    kind: str  # "float" (the raw input), "grid", "acc"
    t: TensorSpec | None = None
    scale: np.ndarray | None = None
    offset: np.ndarray | None = None
    linear: int | None = None  # index of the conv/linear layer whose untouched accumulator this is
    pool_k: int = 1
    deferred: tuple[TensorSpec, ...] = ()  # Flatten(s) to apply after the pool's requantisation
    source: str = ""


def fake_to_true(fq: nn.Module, *, requant_bits: int = 30, input_shape: Sequence[int]) -> IntegerNet:
    """The true-quantised `IntegerNet` of the fake-quantised `fq` (not modified).

    `requant_bits`: D of the requantisation divisor ``div = 2**D``. `input_shape`: the network input's
    shape, e.g. ``(1, 3, 120, 120)`` (average-pool window sizes and tensor shapes come from it).
    Every quantiser must be started. Raises `ExportError` naming the fx node for anything QuantLib's
    integerisation does not cover.
    """
    if not 1 <= requant_bits <= 40:
        raise ExportError(f"requant_bits must be in 1..40 (got {requant_bits})", where="export")
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
    return _Walker(gm, requant_bits).run()


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


def fit_float32(v: np.ndarray, *, half: int = 0, k: int = 1) -> np.ndarray:
    """Integers `v` rounded (each to a multiple of a power of two g, as little as possible) so that
    ``v*k`` and ``v*k - half`` are exactly representable in float32; raises if `half` is not a
    multiple of the g needed. Values below 2**24 are returned unchanged."""
    v = np.asarray(v, np.int64)
    m = np.abs(v).astype(np.float64) * k + half
    e = np.frexp(m)[1]  # m < 2**e
    g = (2 ** np.maximum(0, e - 24)).astype(np.int64)
    out = np.asarray(np.floor_divide(v + g // 2, g) * g, np.int64)
    if half and (half % g.max(initial=1)):
        raise ExportError(f"requantisation constant {int(np.abs(v).max())} is too large for float32 with "
                          f"div/2 = {half}; use more requant_bits", where="export")
    for w in (out * k, out * k - half):
        if not np.array_equal(w.astype(np.float32).astype(np.int64), w):
            raise ExportError(f"requantisation constant {int(np.abs(v).max())} cannot be stored exactly in float32", where="export")
    return out


class _Walker:
    def __init__(self, gm: fx.GraphModule, requant_bits: int) -> None:
        self.gm = gm
        self.D = requant_bits
        self.div = 2**requant_bits
        self.layers: list[Layer] = []
        self.vals: dict[fx.Node, _Val] = {}
        self.input: TensorSpec | None = None
        self.input_rounding = "floor"

    # -- helpers ---------------------------------------------------------------------------------
    def fail(self, node: fx.Node, message: str) -> None:
        raise ExportError(message, where=f"node {node.name}" + (f" ({node.target})" if node.op == "call_module" else ""))

    def shape(self, node: fx.Node) -> tuple[int, ...]:
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            self.fail(node, "no shape known (the node does not produce one tensor)")
        return tuple(int(s) for s in meta.shape)

    def emit(self, layer: Layer) -> TensorSpec:
        self.layers.append(layer)
        return layer.output

    def source_val(self, node: fx.Node) -> _Val:
        srcs = [a for a in node.args if isinstance(a, fx.Node) and a in self.vals]
        if not srcs:
            self.fail(node, "has no tensor input F2T knows")
        return self.vals[srcs[0]]

    # -- the walk --------------------------------------------------------------------------------
    def run(self) -> IntegerNet:
        out = None
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                if self.vals:
                    self.fail(node, "the network must take exactly one input tensor")
                self.vals[node] = _Val("float", source=node.name)
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
            elif node.op == "call_function" and node.target in _ALIAS_FUNCS or node.op == "call_method" and node.target in _ALIAS_METHODS:
                self.vals[node] = self.source_val(node)
            elif node.op == "call_function" and node.target in _SHAPE_FUNCS or node.op == "call_method" and node.target in _SHAPE_METHODS:
                self.reshape(node, self.source_val(node))
            else:
                self.fail(node, f"unsupported operation {node.op} {getattr(node.target, '__name__', node.target)!r} in an integer network")
        if self.input is None:
            raise ExportError("the network has no input quantiser", where="export")
        layers = tuple(self.layers)
        if out is not None and layers and out is not layers[-1].output:
            raise ExportError("the network output is not its last layer's result", where="export")
        return IntegerNet(self.input, self.input_rounding, layers, self.D)

    def module(self, node: fx.Node, m: nn.Module) -> None:
        v = self.source_val(node)
        if isinstance(m, _PACTActivation):
            if v.kind == "float":
                self.input_quantiser(node, m)
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
            self.fail(node, f"{type(m).__name__} has no integer form (supported: PACT quantisers and convolutions/linears, "
                            "BatchNorm, average and max pooling, flatten)")

    def input_quantiser(self, node: fx.Node, m: _PACTActivation) -> None:
        if self.input is not None:
            self.fail(node, "a second quantiser on the float input")
        lo, hi = m.int_range
        self.input = TensorSpec("input", self.shape(node), _scalar_or_channels(_f64(m.get_eps())), lo, hi, m.signed, m.n_levels)
        self.input_rounding = "round" if m.rounding else "floor"
        self.vals[node] = _Val("grid", self.input, source=node.name)

    def linear(self, node: fx.Node, m: PACTConv2d | PACTLinear, v: _Val) -> None:
        if v.kind != "grid":
            self.fail(node, "the input of a convolution/linear must be a quantiser's output (insert an activation quantiser)")
        if v.t.eps.ndim:
            self.fail(node, "per-channel input eps is not supported")
        w = m.weight_int.detach().cpu().numpy().astype(np.int64)
        eps_w = _f64(m.get_eps_w()).reshape(-1)
        scale = _scalar_or_channels(eps_w * float(v.t.eps))
        offset = _f64(m.bias) if m.bias is not None else np.zeros(())
        qmax = max(abs(v.t.lo), abs(v.t.hi))
        bound = int(np.abs(w).reshape(w.shape[0], -1).sum(1).max()) * qmax
        if bound > INT32[1]:
            self.fail(node, f"the accumulator can reach {bound}, beyond int32")
        name = node.name
        t = TensorSpec(name, self.shape(node), scale, -bound, bound, True)
        if isinstance(m, PACTConv2d):
            if m.padding_mode != "zeros" or isinstance(m.padding, str):
                self.fail(node, f"padding {m.padding!r} / mode {m.padding_mode!r}: only explicit zero padding is supported")
            attrs = {"stride": tuple(m.stride), "padding": tuple(m.padding), "dilation": tuple(m.dilation), "groups": m.groups,
                     "weight_levels": m.n_levels}
            self.emit(Layer("Conv", v.t.name, t, {"weight": w}, attrs, source=_src(node)))
        else:
            if len(v.t.shape) != 2:
                self.fail(node, f"a linear layer needs a 2-D input (got shape {list(v.t.shape)})")
            self.emit(Layer("Gemm", v.t.name, t, {"weight": w}, {"weight_levels": m.n_levels}, source=_src(node)))
        self.vals[node] = _Val("acc", t, scale=scale, offset=_scalar_or_channels(offset), linear=len(self.layers) - 1, source=node.name)

    def batchnorm(self, node: fx.Node, bn: nn.BatchNorm2d | nn.BatchNorm1d, v: _Val) -> None:
        if v.kind != "acc":
            self.fail(node, "BatchNorm must follow a convolution/linear (F2T folds it into the requantisation)")
        if not bn.track_running_stats or bn.running_var is None:
            self.fail(node, "BatchNorm without running statistics cannot be folded")
        g = _f64(bn.weight) if bn.affine else np.ones(bn.num_features)
        b = _f64(bn.bias) if bn.affine else np.zeros(bn.num_features)
        gamma = g / np.sqrt(_f64(bn.running_var) + bn.eps)
        scale = v.scale * gamma
        offset = gamma * (v.offset - _f64(bn.running_mean)) + b
        self.vals[node] = dataclasses.replace(v, scale=scale, offset=offset, linear=None)

    def activation(self, node: fx.Node, act: _PACTActivation, v: _Val) -> None:
        eps_out = float(_f64(act.get_eps()).reshape(()))
        lo, hi = act.int_range
        if v.kind == "grid":
            if float(v.t.eps) == eps_out and lo <= v.t.lo and v.t.hi <= hi:
                self.vals[node] = v  # identity requantisation (skip_identity_rqs)
                return
            scale, offset = np.asarray(float(v.t.eps)), np.zeros(())
        else:
            scale, offset = v.scale, v.offset
        mul = np.round(scale / eps_out * self.div)
        add = np.round((offset / eps_out + (0.5 if act.rounding else FLOOR_TOLERANCE)) * self.div)
        mul, add = np.broadcast_arrays(mul, add)
        mul = fit_float32(mul.astype(np.int64), k=v.pool_k)
        add = fit_float32(add.astype(np.int64), half=self.div // 2)
        amax = max(abs(v.t.lo), abs(v.t.hi))
        bound = amax * int(np.abs(mul).max()) + int(np.abs(add).max()) + self.div
        if bound >= _INT64_SAFE:
            self.fail(node, f"x*mul + add can reach {bound}, beyond int64; use fewer requant_bits")
        in_shape = v.t.shape if not v.deferred else self.unflattened_shape(v)
        t = TensorSpec(node.name, in_shape, np.asarray(eps_out), lo, hi, act.signed, act.n_levels)
        attrs = {"div": self.div, "n_levels": act.n_levels, "signed": act.signed, "lo": lo, "hi": hi, "mean_k": v.pool_k}
        self.emit(Layer("RequantShift", v.t.name if not v.deferred else v.source, t, {"mul": mul, "add": add}, attrs, source=_src(node)))
        for i, d in enumerate(v.deferred):  # the flatten(s) after the pool, now after its requantiser
            src = t.name
            t = dataclasses.replace(d, name=f"{node.name}_flat{i}" if i < len(v.deferred) - 1 else f"{node.name}_flat",
                                    eps=t.eps, lo=lo, hi=hi, signed=act.signed, n_levels=act.n_levels)
            self.emit(Layer("Flatten", src, t, source=d.name))
        self.vals[node] = _Val("grid", t, source=node.name)

    def unflattened_shape(self, v: _Val) -> tuple[int, ...]:
        for l in self.layers:
            if l.output.name == v.source:
                return l.output.shape
        raise AssertionError(v.source)

    def avgpool(self, node: fx.Node, m: nn.Module, v: _Val) -> None:
        if v.kind != "grid":
            self.fail(node, "average pooling needs a quantiser's output as input")
        in_shape = self.shape(node.args[0])
        if isinstance(m, nn.AdaptiveAvgPool2d):
            size = m.output_size if isinstance(m.output_size, tuple) else (m.output_size, m.output_size)
            if tuple(size) != (1, 1):
                self.fail(node, f"AdaptiveAvgPool2d to {size}: only global pooling (output size 1) is supported")
            k = in_shape[2] * in_shape[3]
            attrs = {"global_": True, "kernel": tuple(in_shape[2:]), "stride": (1, 1), "padding": (0, 0), "k": k}
        else:
            pair = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)  # noqa: E731
            kernel, stride, pad = pair(m.kernel_size), pair(m.stride if m.stride is not None else m.kernel_size), pair(m.padding)
            if m.ceil_mode or m.divisor_override is not None or (any(pad) and not m.count_include_pad):
                self.fail(node, "average pooling must have equal windows (no ceil_mode, no divisor_override, padding counted)")
            k = kernel[0] * kernel[1]
            attrs = {"global_": False, "kernel": kernel, "stride": stride, "padding": pad, "k": k}
        t = TensorSpec(node.name, self.shape(node), v.t.eps, k * v.t.lo, k * v.t.hi, v.t.signed)
        self.emit(Layer("SumPool", v.t.name, t, {}, attrs, source=_src(node)))
        self.vals[node] = _Val("acc", t, scale=np.asarray(float(v.t.eps) / k), offset=np.zeros(()), pool_k=k, source=node.name)

    def maxpool(self, node: fx.Node, m: nn.MaxPool2d, v: _Val) -> None:
        if v.kind != "grid":
            self.fail(node, "max pooling needs a quantiser's output as input")
        pair = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)  # noqa: E731
        attrs = {"kernel": pair(m.kernel_size), "stride": pair(m.stride if m.stride is not None else m.kernel_size),
                 "padding": pair(m.padding), "dilation": pair(m.dilation), "ceil_mode": bool(m.ceil_mode)}
        t = dataclasses.replace(v.t, name=node.name, shape=self.shape(node))
        self.emit(Layer("MaxPool", v.t.name, t, {}, attrs, source=_src(node)))
        self.vals[node] = dataclasses.replace(v, t=t, source=node.name)

    def reshape(self, node: fx.Node, v: _Val) -> None:
        src_shape, shape = v.t.shape if not v.deferred else v.deferred[-1].shape, self.shape(node)
        if shape == src_shape:
            self.vals[node] = v
            return
        if len(src_shape) < 2 or shape != (src_shape[0], int(np.prod(src_shape[1:]))):
            self.fail(node, f"reshape {list(src_shape)} -> {list(shape)}: only flattening to (N, features) is supported")
        if v.kind == "acc" and v.pool_k > 1:  # move it after the pool's requantiser
            t = dataclasses.replace(v.t, name=node.name, shape=shape)
            self.vals[node] = dataclasses.replace(v, deferred=v.deferred + (t,), source=v.source if v.deferred else v.t.name)
            return
        spatial = int(np.prod(src_shape[2:]))
        if v.kind == "acc" and spatial != 1 and (v.scale.ndim or v.offset.ndim):
            self.fail(node, "flattening a per-channel accumulator with spatial extent before its requantisation")
        t = dataclasses.replace(v.t, name=node.name, shape=shape)
        self.emit(Layer("Flatten", v.t.name, t, source=_src(node)))
        self.vals[node] = dataclasses.replace(v, t=t, linear=None if v.kind != "acc" else v.linear, source=node.name)

    def finish(self, node: fx.Node, v: _Val) -> TensorSpec:
        if v.kind == "grid":
            if not self.layers:
                self.fail(node, "the network computes nothing")
            if self.layers[-1].output.name != v.t.name:
                self.fail(node, "the output must be the last layer's result")
            return self.layers[-1].output
        if v.kind != "acc" or v.linear is None or v.linear != len(self.layers) - 1:
            self.fail(node, "the network output must be a quantiser's output or the accumulator of its last "
                            "convolution/linear (a BatchNorm or pool before the output has no integer form)")
        layer = self.layers[v.linear]
        m = self.gm.get_submodule(layer.source)
        in_eps = self.tensors()[layer.input].eps
        consts = dict(layer.consts)
        bound = max(abs(layer.output.lo), abs(layer.output.hi))
        if m.bias is not None:
            bias = m.get_bias_int(torch.tensor(float(in_eps))).detach().cpu().numpy().astype(np.int64)
            if np.abs(bias).max(initial=0) >= 2**24:
                self.fail(node, f"the integer bias reaches {int(np.abs(bias).max())} (bias / (eps_w*eps_in)), "
                                "beyond float32's exact integers (2**24): the layer's input eps is too small for its bias")
            consts["bias"] = bias
            bound += int(np.abs(bias).max())
        bound = min(bound, INT32[1])  # a worst case; the engine checks the values it computes
        out = dataclasses.replace(layer.output, lo=-bound, hi=bound)
        self.layers[-1] = dataclasses.replace(layer, output=out, consts=consts)
        return out

    def tensors(self) -> dict[str, TensorSpec]:
        return {self.input.name: self.input, **{l.output.name: l.output for l in self.layers}}
