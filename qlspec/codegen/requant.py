"""How one requantiser runs in C++: which axis its constants vary along, its folded bias, and
whether four int32 lanes provably suffice or two int64 lanes are needed.

    y = clip((x*mul + bias) >> shift, lo, hi),  bias = add + div//2 (+ b*mul when a Conv/Gemm bias b
                                                 is folded in: (x + b)*mul + add = x*mul + b*mul + add)

is `RequantShift`'s docstring rearranged, exact in integers. The runtime kernel (`qlspec::requant`)
walks an (outer, channels, inner) view of the output; mul and bias are one value per channel, or one
value for all. Constants that vary along more than one axis are expanded to one value per element
(channels = size), so every broadcast the IR allows has a plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qlspec.engine.ops.requant_shift import shift_of

I32 = 1 << 31


@dataclass(frozen=True)
class RequantPlan:
    """axis: the output axis mul/bias vary along, None when they are scalars, -1 when expanded
    per element. mul/bias: int64, one per channel (length `channels`, 1 when scalar).
    lanes: "int32" when |x*mul + bias| < 2^31 is proven for every x within `x_bound`, else "int64"."""

    shape: tuple[int, ...]
    axis: int | None
    mul: np.ndarray
    bias: np.ndarray
    shift: int
    lo: int
    hi: int
    lanes: str

    @property
    def view(self) -> tuple[int, int, int]:
        """(outer, channels, inner) of the dense output."""
        size = math.prod(self.shape)
        if self.axis is None:
            return 1, 1, size
        if self.axis == -1:
            return 1, size, 1
        return math.prod(self.shape[: self.axis]), self.shape[self.axis], math.prod(self.shape[self.axis + 1 :])

    @property
    def per_channel(self) -> bool:
        return self.axis is not None

    def on_axis(self, axis: int) -> RequantPlan:
        """The same requantiser with its constants spelled per channel of `axis` (a scalar is tiled)."""
        if self.axis == axis:
            return self
        assert self.axis is None, "only a scalar requantiser can be re-spelled on another axis"
        n = self.shape[axis]
        return RequantPlan(self.shape, axis, np.repeat(self.mul, n), np.repeat(self.bias, n), self.shift, self.lo, self.hi, self.lanes)


def _varying_axes(a: np.ndarray) -> list[int]:
    return [d for d in range(a.ndim) if a.shape[d] > 1 and not (a == a.take([0], axis=d)).all()]


def plan_requant(
    shape: tuple[int, ...],
    mul: np.ndarray,
    add: np.ndarray,
    div: int,
    lo: int,
    hi: int,
    x_bound: np.ndarray | int,
    bias: tuple[np.ndarray, int] | None = None,
) -> RequantPlan:
    """Plan `RequantShift(x, mul, add; div, lo, hi)` on an output of `shape`.

    x_bound: the largest |x| the requantiser can see, a scalar or one value per index of the
    channel axis of `bias` (a Conv/Gemm accumulator's per-output-channel bound, bias excluded).
    bias: (b, axis), an accumulator bias b along output axis `axis` to fold into the constants.
    """
    shape = tuple(int(d) for d in shape)
    shift = shift_of(int(div))
    m = np.broadcast_to(np.asarray(mul, np.int64), shape)
    b = np.broadcast_to(np.asarray(add, np.int64), shape) + np.int64(div // 2)
    bound = np.asarray(x_bound, dtype=object)
    if bias is not None:
        vec, ax = bias
        along = [1] * len(shape)
        along[ax] = shape[ax]
        b = b + np.asarray(vec, np.int64).reshape(along) * m
    if bound.ndim:
        along = [1] * len(shape)
        along[bias[1] if bias is not None else 1] = -1
        bound = np.broadcast_to(bound.reshape(along), shape)
    varying = sorted(set(_varying_axes(m)) | set(_varying_axes(b)))
    if not varying:
        axis, mc, bc, xb = None, m.reshape(-1)[:1], b.reshape(-1)[:1], bound.max() if bound.ndim else bound
        xb = np.asarray([xb], dtype=object)
    elif len(varying) == 1:
        axis = varying[0]
        index = tuple(slice(None) if d == axis else 0 for d in range(len(shape)))
        mc, bc = m[index], b[index]
        xb = bound.max(axis=tuple(d for d in range(len(shape)) if d != axis)) if bound.ndim else np.full(shape[axis], bound, object)
    else:
        axis, mc, bc = -1, m.reshape(-1), b.reshape(-1)
        xb = bound.reshape(-1) if bound.ndim else np.full(mc.size, bound, object)
    mc = np.ascontiguousarray(mc, np.int64)
    bc = np.ascontiguousarray(bc, np.int64)
    worst = max((int(x) * abs(int(u)) + abs(int(v)) for x, u, v in zip(xb, mc, bc)), default=0)
    fits = (
        worst < I32
        and shift <= 31
        and -I32 <= lo
        and hi < I32
        and all(-I32 <= int(v) < I32 for v in (mc.min(), mc.max(), bc.min(), bc.max()))
    )
    return RequantPlan(shape, axis, mc, bc, shift, int(lo), int(hi), "int32" if fits else "int64")
