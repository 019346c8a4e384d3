"""Clip: saturate an integer tensor to [lo, hi]."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qlspec.engine.ops.base import Op, require
from qlspec.graph.ir import TensorInfo


@dataclass(frozen=True)
class Clip(Op):
    """y = min(max(x, lo), hi), elementwise. y: the smallest type holding [clip(x.lo), clip(x.hi)]
    (clip is monotonic, so that is exactly the reachable range)."""

    op_type = "Clip"
    lo: int
    hi: int

    def __post_init__(self) -> None:
        require(self.lo <= self.hi, f"empty range [{self.lo}, {self.hi}]")

    def out_range(self, x: TensorInfo) -> tuple[int, int]:
        return min(max(x.lo, self.lo), self.hi), min(max(x.hi, self.lo), self.hi)

    def infer(self, ins, vals):
        return [TensorInfo.for_range(ins[0].shape, *self.out_range(ins[0]))]

    def run(self, x):
        return np.clip(x.astype(np.int64), self.lo, self.hi)
