"""Pad: pad every axis with a constant integer, the edge value, or a reflection."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qlspec.engine.ops.base import Op, require
from qlspec.graph.ir import TensorInfo


@dataclass(frozen=True)
class Pad(Op):
    """y = numpy.pad(x, pads, mode) with `pads` in ONNX order (begin_0, ..., begin_r-1, end_0, ...,
    end_r-1), all >= 0. mode "constant" fills with the integer `value`, "edge" repeats the border,
    "reflect" mirrors without repeating it. y's type holds x's range and `value`."""

    op_type = "Pad"
    pads: tuple[int, ...]
    mode: str = "constant"
    value: int = 0

    def __post_init__(self) -> None:
        require(self.mode in ("constant", "edge", "reflect"), f"mode must be constant, edge or reflect (got {self.mode!r})")
        require(min(self.pads, default=0) >= 0, f"negative pads are not supported (got {self.pads})")

    def _width(self, rank: int) -> list[tuple[int, int]]:
        require(len(self.pads) == 2 * rank, f"pads needs {2 * rank} values for rank {rank} (got {len(self.pads)})")
        return [(self.pads[i], self.pads[i + rank]) for i in range(rank)]

    def infer(self, ins, vals):
        x = ins[0]
        width = self._width(len(x.shape))
        shape = tuple(d + a + b for d, (a, b) in zip(x.shape, width))
        lo, hi = (min(x.lo, self.value), max(x.hi, self.value)) if self.mode == "constant" else (x.lo, x.hi)
        return [TensorInfo.for_range(shape, lo, hi)]

    def batch_free(self) -> bool:
        rank = len(self.pads) // 2
        return rank == 0 or (self.pads[0] == 0 and self.pads[rank] == 0)

    def run(self, x):
        width = self._width(x.ndim)
        if self.mode == "constant":
            return np.pad(x.astype(np.int64), width, mode="constant", constant_values=self.value)
        return np.pad(x, width, mode=self.mode)
