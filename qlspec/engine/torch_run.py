"""A second executor of the qlspec graph, in torch: the integer-faithful evaluation of a quantised network.

`run_graph_torch(g, inputs)` computes what `qlspec.engine.run_graph` computes, bit for bit, for the
ops F2T emits (Quantise, Conv, Gemm, RequantShift, SumPool, GlobalSumPool, MaxPool, Add, Concat,
Flatten), with torch's kernels on whatever device the inputs are on, so that QAT's evaluation can
run the exported integer arithmetic on a whole validation set where it trains. It is written apart
from the reference engine's own torch path (`qlspec.engine.torch_kernels`) on purpose: the ladder
compares the two (rung FQI against TQ), and a shared mistake would pass that comparison.

Exactness follows `qlspec.engine.exact_matmul`: a convolution, product or window sum is computed in
float32 when every partial sum is an integer below 2**24 in magnitude (``K * max|x| * max|w|``,
with ``max|x|`` the values' own extreme, found by each node's range check, or the declared type's
for a graph input), else in float64 (below 2**53), else refused; either float format then holds
every partial sum exactly, in whatever order the kernel adds them. Values travel as float tensors
holding exact integers, 4-D ones in channels-last memory (oneDNN's faster layout); requantisation
runs in int32 when ``|x|*|mul| + |add| + div`` stays below 2**31, in float64 below 2**53 (then
exact, the division by ``2**D`` included), else in int64. It is not the oracle: the ladder compares
its result with the reference engine's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from qlspec.engine.exact_matmul import exact_dtype
from qlspec.errors import GraphError
from qlspec.graph.ir import Graph, Node

_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}
_BOUND = "qlspec_bound"  # attribute of an activation tensor: max |value| its declared type allows


def _max_abs(t: torch.Tensor) -> int:
    """max |t|: from the declared type of an activation (cheap), from the values of a constant."""
    bound = getattr(t, _BOUND, None)
    if bound is not None:
        return bound
    return int(t.abs().max()) if t.numel() else 0


def _exact(bound: int, where: str) -> torch.dtype:
    dt = _DTYPES.get(exact_dtype(bound))
    if dt is None:
        raise GraphError(f"sums of products may reach {bound}, beyond float64's exact integers", where=where)
    return dt


def _carrier(t: torch.Tensor) -> torch.Tensor:
    """Integers as the cheapest float tensor that holds them exactly (float32 below 2**24)."""
    return t.float() if _max_abs(t) < 2**24 else t.double()


def _memory_order(t: torch.Tensor) -> torch.Tensor:
    """`t`'s values as they lie in memory (a view where `t` is dense): reductions over all of a
    channels-last tensor in its logical order run about 10x slower than over its memory."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1)
    return t


def _quantise(n: Node, x: torch.Tensor) -> torch.Tensor:
    v = x.float() / torch.tensor(float(n.attr("eps")), dtype=torch.float32)
    rule = n.attr("rounding")
    q = torch.floor(v) if rule == "floor" else torch.floor(v + 0.5) if rule == "half_up" else torch.round(v)
    if torch.isnan(q).any():
        raise GraphError("NaN in the input of Quantise", where=n.where())
    return q.clamp(int(n.attr("lo")), int(n.attr("hi")))


def _conv(n: Node, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    k = w.shape[1] * w.shape[2] * w.shape[3]
    dt = _exact(k * _max_abs(x) * _max_abs(w) + (0 if b is None else _max_abs(b)), n.where())
    pt, pl, pb, pr = n.attr("pads", (0, 0, 0, 0))
    xf = F.pad(x.to(dt), (pl, pr, pt, pb)) if (pt, pl, pb, pr) != (0, 0, 0, 0) else x.to(dt)
    return F.conv2d(
        xf,
        w.to(dt),
        None if b is None else b.to(dt),
        tuple(n.attr("strides", (1, 1))),
        0,
        tuple(n.attr("dilations", (1, 1))),
        int(n.attr("group", 1)),
    )


def _gemm(n: Node, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
    a = a.t() if n.attr("trans_a", False) else a
    b = b.t() if n.attr("trans_b", False) else b
    dt = _exact(a.shape[-1] * _max_abs(a) * _max_abs(b) + (0 if c is None else _max_abs(c)), n.where())
    y = a.to(dt) @ b.to(dt)
    return y if c is None else y + c.to(dt)


def _requant(n: Node, x: torch.Tensor, mul: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
    div = int(n.attr("div"))
    peak = _max_abs(x) * _max_abs(mul) + _max_abs(add) + div
    if peak < 2**31:  # int32 holds every value: half the memory traffic of float64
        y = x.to(torch.int32).mul_(mul.to(torch.int32)).add_(add.to(torch.int32) + div // 2)
        y >>= div.bit_length() - 1  # arithmetic: floor
    elif peak < 2**53:  # float64 holds every value exactly
        y = x.double().mul_(mul.double()).add_(add.double() + div // 2).mul_(1.0 / div).floor_()  # * 2**-D: exact
    else:
        y = (x.long() * mul.long() + add.long() + div // 2) >> (div.bit_length() - 1)
    return y.clamp_(int(n.attr("lo")), int(n.attr("hi"))).float()


def _sum_pool(n: Node, x: torch.Tensor) -> torch.Tensor:
    kh, kw = n.attr("kernel_shape")
    pt, pl, pb, pr = n.attr("pads", (0, 0, 0, 0))
    dt = _exact(kh * kw * _max_abs(x), n.where())
    xf = F.pad(x.to(dt), (pl, pr, pt, pb))
    return F.avg_pool2d(xf, (kh, kw), tuple(n.attr("strides", (1, 1))), divisor_override=1)


def _global_sum_pool(n: Node, x: torch.Tensor) -> torch.Tensor:
    return _carrier(x.double().sum(dim=(2, 3), keepdim=True))


def _max_pool(n: Node, x: torch.Tensor) -> torch.Tensor:
    pt, pl, pb, pr = n.attr("pads", (0, 0, 0, 0))
    if (pt, pl) != (pb, pr):
        raise GraphError("asymmetric max-pool padding is not supported by the torch executor", where=n.where())
    return F.max_pool2d(
        x,
        tuple(n.attr("kernel_shape")),
        tuple(n.attr("strides", (1, 1))),
        (pt, pl),
        tuple(n.attr("dilations", (1, 1))),
        bool(n.attr("ceil_mode", False)),
    )


def _concat(n: Node, *xs: torch.Tensor) -> torch.Tensor:
    return torch.cat([x.double() for x in xs], int(n.attr("axis", 1))).float()


def _flatten(n: Node, x: torch.Tensor) -> torch.Tensor:
    axis = int(n.attr("axis", 1))
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


OPS: dict[str, Callable[..., torch.Tensor]] = {
    "Quantise": _quantise,
    "Conv": _conv,
    "Gemm": _gemm,
    "RequantShift": _requant,
    "SumPool": _sum_pool,
    "GlobalSumPool": _global_sum_pool,
    "MaxPool": _max_pool,
    "Add": lambda n, a, b: _carrier(a.double() + b.double()),
    "Concat": _concat,
    "Flatten": _flatten,
}


@torch.no_grad()
def run_graph_torch(g: Graph, inputs: Mapping[str, np.ndarray | torch.Tensor]) -> dict[str, np.ndarray]:
    """Execute `g` with torch (module docstring); outputs by name as int64 numpy arrays (float
    outputs as float32). Raises `GraphError` for an op this executor does not implement."""
    unknown = sorted({n.op for n in g.nodes} - set(OPS))
    if unknown:
        raise GraphError(f"ops {unknown} are not implemented by the torch executor (it runs F2T's ops: {sorted(OPS)})")
    env: dict[str, torch.Tensor] = {name: torch.from_numpy(np.asarray(v, np.float64)) for name, v in g.constants.items()}
    for name in g.inputs:
        v = inputs[name]
        v = v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(v))
        v = v.float() if g.tensors[name].is_float else _carrier(v.double())
        env[name] = v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v
        if not g.tensors[name].is_float:
            setattr(env[name], _BOUND, max(abs(g.tensors[name].lo), abs(g.tensors[name].hi)))
    last_use = {t: i for i, n in enumerate(g.nodes) for t in n.inputs}
    for i, n in enumerate(g.nodes):
        y = OPS[n.op](n, *(env[t] if t else None for t in n.inputs))
        info = g.tensors[n.outputs[0]]
        bound = max(abs(info.lo), abs(info.hi))
        if y.numel() and not info.is_float:
            lo, hi = (int(v) for v in torch.aminmax(_memory_order(y)))
            if lo < info.lo or hi > info.hi:
                raise GraphError(f"result [{lo}, {hi}] outside its type {info.describe()}", where=n.where())
            bound = max(abs(lo), abs(hi))  # the values themselves: a tighter bound, for the next op's choice
        setattr(y, _BOUND, bound)
        env[n.outputs[0]] = y
        for t in n.inputs:
            if t and last_use.get(t) == i and t not in g.outputs and t not in g.constants:
                del env[t]
    return {t: env[t].numpy().astype(np.float32 if g.tensors[t].is_float else np.int64) for t in g.outputs}
