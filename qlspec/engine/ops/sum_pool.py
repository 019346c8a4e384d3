"""SumPool: the integer half of an average pool (sum the window; the 1/k lives in the requantiser)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qlspec.engine.ops.base import Op, require, spatial_out
from qlspec.engine.windows import pad_spatial, windows
from qlspec.graph.ir import TensorInfo


@dataclass(frozen=True)
class SumPool(Op):
    """y[n, c, oy, ox] = sum_{i, j} x[n, c, oy*sh + i - pt, ox*sw + j - pl], zero outside the input.

    This is ONNX AveragePool without the division: QuantLab's AlignAvgPoolPass makes the following
    RequantShift's mul a multiple of k = kh*kw, and the importer divides that mul by k, so
    SumPool -> RequantShift computes "sum then requantise" (PULP-NN) exactly. y: the smallest
    type holding [k*lo, k*hi] of x's range.
    """

    op_type = "SumPool"
    kernel_shape: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)

    def __post_init__(self) -> None:
        require(
            len(self.kernel_shape) == 2 and min(self.kernel_shape) >= 1, f"kernel_shape must be 2 positive ints (got {self.kernel_shape})"
        )
        require(len(self.strides) == 2 and min(self.strides) >= 1, f"strides must be 2 positive ints (got {self.strides})")
        require(len(self.pads) == 4 and min(self.pads) >= 0, f"pads must be 4 non-negative ints (got {self.pads})")

    def out_hw(self, shape: tuple[int, ...]) -> tuple[int, int]:
        require(len(shape) == 4, f"SumPool input must be NCHW (got shape {shape})")
        pt, pl, pb, pr = self.pads
        return (
            spatial_out(shape[2], self.kernel_shape[0], self.strides[0], 1, pt, pb),
            spatial_out(shape[3], self.kernel_shape[1], self.strides[1], 1, pl, pr),
        )

    def infer(self, ins, vals):
        x = ins[0]
        k = self.kernel_shape[0] * self.kernel_shape[1]
        return [TensorInfo.for_range((*x.shape[:2], *self.out_hw(x.shape)), k * x.lo, k * x.hi)]

    def macs(self, ins, outs):
        return outs[0].size * self.kernel_shape[0] * self.kernel_shape[1]

    def run(self, x):
        xp = pad_spatial(x.astype(np.int64), self.pads, 0)
        return windows(xp, self.kernel_shape, self.strides, (1, 1), self.out_hw(x.shape)).sum(axis=(2, 3))
