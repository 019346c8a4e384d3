"""RequantShift: QuantLab's requantisation, the heart of the integer contract."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qlspec.engine.exact_matmul import max_abs
from qlspec.engine.ops.base import INT64_LIMIT, Op, magnitude, require
from qlspec.graph.ir import TensorInfo


def check_requant_params(
    x: TensorInfo, mul: TensorInfo, add: TensorInfo, div: int, mul_val: np.ndarray | None, add_val: np.ndarray | None
) -> None:
    """mul/add must broadcast onto x without changing its shape, and x*mul + add + div must fit int64."""
    for what, t in (("mul", mul), ("add", add)):
        try:
            ok = np.broadcast_shapes(x.shape, t.shape) == x.shape
        except ValueError:
            ok = False
        require(ok, f"{what} of shape {t.shape} does not broadcast onto the input's shape {x.shape}")
    bound = magnitude(x) * magnitude(mul, mul_val) + magnitude(add, add_val) + div
    require(bound < INT64_LIMIT, f"x*mul + add may exceed int64 (bound {bound})")


def reach(x: TensorInfo, mul: np.ndarray, add: np.ndarray, div: int) -> int:
    """A bound on |floor((x*mul + add + div//2) / div)| over every value x's type holds: what an
    unclipped requantiser can produce (its output range when nothing clips it)."""
    return (magnitude(x) * magnitude(TensorInfo.of_array(mul), mul) + int(np.abs(add.astype(np.int64)).max(initial=0)) + div) // div + 1


def requantise(x: np.ndarray, mul: np.ndarray, add: np.ndarray, shift: int) -> np.ndarray:
    """floor((x*mul + add + div//2) / div), div = 2**shift, in int64 (no clipping)."""
    div = 1 << shift
    acc = np.multiply(x, mul.astype(np.int64), dtype=np.int64)  # one fresh int64 buffer, then in place
    acc += add.astype(np.int64) + div // 2
    acc >>= shift  # arithmetic shift = floor division by 2**shift, also for negatives
    return acc


def requantise_into(out: np.ndarray, acc: np.ndarray, mul: np.ndarray, add: np.ndarray, shift: int, lo: int, hi: int, bound: int) -> None:
    """out[...] = clip(floor((acc*mul + add + div//2) / div), lo, hi), div = 2**shift, for integers
    `acc` held in any numeric dtype with |acc| <= `bound`; `out` is an integer array holding [lo, hi].

    In float64 when |acc|*|mul| + |add| + div stays below 2**53: then every intermediate is an
    integer times 2**-shift with fewer than 53 significant bits, so ``acc * (mul/div) + (add +
    div//2)/div`` and its floor are exact (scaling by a power of two never rounds). Clipping to the
    integers [lo, hi] commutes with the floor, and when lo >= 0 the float-to-integer conversion,
    which truncates toward zero, is the floor. Otherwise in int64 (`requantise`).
    """
    div = 1 << shift
    if bound * max_abs(mul) + max_abs(add) + div >= 1 << 53:
        y = requantise(acc.astype(np.int64), mul, add, shift)
    else:
        y = np.multiply(acc, mul.astype(np.float64) * 2.0**-shift, dtype=np.float64)
        y += (add.astype(np.float64) + div // 2) * 2.0**-shift
        if lo < 0:
            np.floor(y, out=y)
    out[...] = np.clip(y, lo, hi, out=y)


def shift_of(div: int) -> int:
    require(isinstance(div, int) and div >= 1 and div & (div - 1) == 0, f"div must be a power of two >= 1 (got {div})")
    return div.bit_length() - 1


@dataclass(frozen=True)
class RequantShift(Op):
    """y = clip(floor((x*mul + add + div//2) / div), lo, hi), div = 2**s.

    x: integer (usually the int32 accumulator of a Conv/Gemm/MatMul), any shape.
    mul, add: integer arrays broadcast onto x with numpy rules: shape () per tensor, (C, 1, 1) or
    (1, C, 1, 1) per channel of NCHW, (C,) per column of a 2-D (N, C) tensor.
    Arithmetic: exact in int64 (x*mul + add + div checked to fit). Rounding: `div//2` makes the
    floor round half up (toward +inf): floor(2.5) -> 3, floor(-2.5) -> -2; for div = 1 there is
    nothing to round. QuantLib's DORY spelling (Mul, Add, Div, Floor) already has the half in its
    `add`; the importer subtracts it, so both spellings map to this one op.
    [lo, hi]: the output range, [0, n-1] unsigned or [-n/2, n/2-1] signed for n_levels n (see
    `levels_range`), or narrower after a Clip is folded in. y: the smallest type holding [lo, hi].
    """

    op_type = "RequantShift"
    n_inputs = (3, 3)
    clips_output = True
    div: int
    lo: int
    hi: int

    def __post_init__(self) -> None:
        shift_of(self.div)
        require(self.lo <= self.hi, f"empty output range [{self.lo}, {self.hi}]")

    def infer(self, ins, vals):
        check_requant_params(ins[0], ins[1], ins[2], self.div, vals[1], vals[2])
        return [TensorInfo.for_range(ins[0].shape, self.lo, self.hi)]

    def run(self, x, mul, add):
        from qlspec.engine.torch_kernels import requant_shift  # torch loads only when a graph runs

        fast = requant_shift(self, x, mul, add)  # int32 arithmetic, when it holds every value exactly
        if fast is not None:
            return fast
        y = requantise(x, mul, add, shift_of(self.div))
        np.maximum(y, self.lo, out=y)
        np.minimum(y, self.hi, out=y)
        return y
