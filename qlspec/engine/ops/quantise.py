"""Quantise: the input quantiser, float32 -> integer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qlspec.engine.ops.base import Op, require
from qlspec.graph.ir import TensorInfo


@dataclass(frozen=True)
class Quantise(Op):
    """y = clip(round(x / eps), lo, hi)

    x: float32. The division is one IEEE float32 division (x and eps both float32, as
    `torch.round(x / eps)` on float32 tensors); round is half to even (np.rint, torch.round).
    y: the smallest type holding [lo, hi] (QuantLab's default input is signed 8-bit: [-128, 127]).
    NaN inputs are an error.
    """

    op_type = "Quantise"
    accepts_float = True
    eps: float
    lo: int
    hi: int

    def __post_init__(self) -> None:
        require(float(self.eps) > 0, f"eps must be > 0 (got {self.eps})")
        require(self.lo <= self.hi, f"empty range [{self.lo}, {self.hi}]")

    def infer(self, ins, vals):
        require(ins[0].is_float, "Quantise takes a float32 input")
        return [TensorInfo.for_range(ins[0].shape, self.lo, self.hi)]

    def run(self, x):
        q = np.rint(x.astype(np.float32) / np.float32(self.eps))
        require(not np.isnan(q).any(), "NaN in the input of Quantise")
        return np.clip(q, self.lo, self.hi).astype(np.int64)
