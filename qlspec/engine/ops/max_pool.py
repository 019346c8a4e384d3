"""MaxPool: 2-D integer max pooling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qlspec.engine.ops.base import Op, require, spatial_out
from qlspec.engine.windows import pad_spatial, windows
from qlspec.graph.ir import TensorInfo


@dataclass(frozen=True)
class MaxPool(Op):
    """y[n, c, oy, ox] = max_{i, j} x[n, c, oy*sh + i*dh - pt, ox*sw + j*dw - pl] over the positions
    inside the input (padding never wins: it acts as -inf). `ceil_mode` as ONNX/PyTorch. y has
    x's type; values unchanged."""

    op_type = "MaxPool"
    kernel_shape: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    ceil_mode: bool = False

    def __post_init__(self) -> None:
        require(
            len(self.kernel_shape) == 2 and min(self.kernel_shape) >= 1, f"kernel_shape must be 2 positive ints (got {self.kernel_shape})"
        )
        require(len(self.strides) == 2 and min(self.strides) >= 1, f"strides must be 2 positive ints (got {self.strides})")
        require(len(self.pads) == 4 and min(self.pads) >= 0, f"pads must be 4 non-negative ints (got {self.pads})")
        require(all(p < k for p, k in zip(self.pads, self.kernel_shape * 2)), "pads must be smaller than the kernel")

    def out_hw(self, shape: tuple[int, ...]) -> tuple[int, int]:
        require(len(shape) == 4, f"MaxPool input must be NCHW (got shape {shape})")
        pt, pl, pb, pr = self.pads
        return (
            spatial_out(shape[2], self.kernel_shape[0], self.strides[0], self.dilations[0], pt, pb, self.ceil_mode),
            spatial_out(shape[3], self.kernel_shape[1], self.strides[1], self.dilations[1], pl, pr, self.ceil_mode),
        )

    def infer(self, ins, vals):
        x = ins[0]
        return [TensorInfo((*x.shape[:2], *self.out_hw(x.shape)), x.bits, x.signed)]

    def run(self, x):
        ho, wo = self.out_hw(x.shape)
        kh, kw = self.kernel_shape
        pt, pl, pb, pr = self.pads
        # extra bottom/right padding covers ceil_mode's partial last windows
        need_h = (ho - 1) * self.strides[0] + (kh - 1) * self.dilations[0] + 1
        need_w = (wo - 1) * self.strides[1] + (kw - 1) * self.dilations[1] + 1
        pb = max(pb, need_h - x.shape[2] - pt)
        pr = max(pr, need_w - x.shape[3] - pl)
        xp = pad_spatial(x, (pt, pl, pb, pr), np.iinfo(x.dtype).min)
        return windows(xp, (kh, kw), self.strides, self.dilations, (ho, wo)).max(axis=(2, 3))
