"""Quantise: the input quantiser, float32 -> integer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qlspec.engine.ops.base import Op, require
from qlspec.graph.ir import TensorInfo

ROUNDINGS = ("floor", "half_up", "round")


@dataclass(frozen=True)
class Quantise(Op):
    """y = clip(r(v), lo, hi), v = x / eps, r by `rounding`: "floor" floor(v), "half_up" floor(v + 0.5),
    "round" half to even (np.rint, torch.round)

    x: float32. The division is one IEEE float32 division (x and eps both float32, as `x / eps` on
    float32 tensors), and v + 0.5 one float32 addition: the fake quantiser's own arithmetic
    (`qlspec.quant.pact.round_by`). F2T emits "floor" (PACT's activation rule) or "half_up" (a
    quantiser with rounding); "round" reads files that ask for half to even. With the default
    normalisation (p - 127.5)/128 and eps 1/128 it maps a uint8 pixel p to p - 128 exactly
    (rounding would merge pixels 127 and 128).
    y: the smallest type holding [lo, hi] (QuantLab's default input is signed 8-bit: [-128, 127]).
    NaN inputs are an error.
    """

    op_type = "Quantise"
    accepts_float = True
    eps: float
    lo: int
    hi: int
    rounding: str = "round"

    def __post_init__(self) -> None:
        require(float(self.eps) > 0, f"eps must be > 0 (got {self.eps})")
        require(self.lo <= self.hi, f"empty range [{self.lo}, {self.hi}]")
        require(self.rounding in ROUNDINGS, f"rounding must be one of {list(ROUNDINGS)} (got {self.rounding!r})")

    def infer(self, ins, vals):
        require(ins[0].is_float, "Quantise takes a float32 input")
        return [TensorInfo.for_range(ins[0].shape, self.lo, self.hi)]

    def run(self, x):
        v = np.asarray(x, np.float32) / np.float32(self.eps)
        q = np.floor(v) if self.rounding == "floor" else np.floor(v + np.float32(0.5)) if self.rounding == "half_up" else np.rint(v)
        require(not np.isnan(q).any(), "NaN in the input of Quantise")
        return np.clip(q, self.lo, self.hi).astype(np.int64)
