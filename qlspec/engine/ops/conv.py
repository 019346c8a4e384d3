"""Conv: 2-D integer convolution with an exact int32 accumulator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qlspec.engine.exact_matmul import exact_dtype, max_abs
from qlspec.engine.ops.base import Op, require, spatial_out
from qlspec.engine.windows import pad_spatial, windows
from qlspec.graph.ir import TensorInfo


@dataclass(frozen=True)
class Conv(Op):
    """y[n, m, oy, ox] = b[m] + sum_{c, i, j} x[n, g*Cg + c, oy*sh + i*dh - pt, ox*sw + j*dw - pl] * w[m, c, i, j]

    x: integer NCHW (any width), zero-padded by `pads` = (top, left, bottom, right).
    w: integer (M, C/group, kh, kw); g = m // (M/group) is the group of output channel m and
    Cg = C/group (group = C = M is depthwise). b: optional integer (M,).
    y: int32. The sum is exact (no intermediate rounding or wrap-around); a result outside the
    int32 range is an error, never wrapped.
    """

    op_type = "Conv"
    n_inputs = (2, 3)
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    group: int = 1

    def __post_init__(self) -> None:
        require(len(self.strides) == 2 and min(self.strides) >= 1, f"strides must be 2 positive ints (got {self.strides})")
        require(len(self.dilations) == 2 and min(self.dilations) >= 1, f"dilations must be 2 positive ints (got {self.dilations})")
        require(len(self.pads) == 4 and min(self.pads) >= 0, f"pads must be 4 non-negative ints (got {self.pads})")
        require(self.group >= 1, f"group must be >= 1 (got {self.group})")

    def out_shape(self, x: TensorInfo, w: TensorInfo) -> tuple[int, ...]:
        require(len(x.shape) == 4, f"Conv input must be NCHW (got shape {x.shape})")
        require(len(w.shape) == 4, f"Conv weight must be (M, C/group, kh, kw) (got shape {w.shape})")
        n, c, h, wd = x.shape
        m, cg, kh, kw = w.shape
        require(c == cg * self.group, f"input has {c} channels, weight expects {cg} x group {self.group}")
        require(m % self.group == 0, f"{m} output channels not divisible by group {self.group}")
        pt, pl, pb, pr = self.pads
        ho = spatial_out(h, kh, self.strides[0], self.dilations[0], pt, pb)
        wo = spatial_out(wd, kw, self.strides[1], self.dilations[1], pl, pr)
        return (n, m, ho, wo)

    def infer(self, ins, vals):
        x, w = ins[0], ins[1]
        shape = self.out_shape(x, w)
        if len(ins) > 2 and ins[2] is not None:
            require(ins[2].shape == (w.shape[0],), f"bias must have shape ({w.shape[0]},) (got {ins[2].shape})")
        return [TensorInfo(shape, 32, True)]

    def macs(self, ins, outs):
        _, cg, kh, kw = ins[1].shape
        return outs[0].size * cg * kh * kw

    def run(self, x, w, b=None):
        n, c, _, _ = x.shape
        m, cg, kh, kw = w.shape
        _, _, ho, wo = self.out_shape(TensorInfo(x.shape, 32, True), TensorInfo(w.shape, 8, True))
        g, mg, k = self.group, m // self.group, cg * kh * kw
        dt = exact_dtype(k * max_abs(x) * max_abs(w))  # float32/float64 BLAS when provably exact
        xp = pad_spatial(x.astype(dt, copy=False), self.pads, 0)
        cols = windows(xp, (kh, kw), self.strides, self.dilations, (ho, wo))  # (N, C, kh, kw, Ho, Wo) view
        wt = w.astype(dt, copy=False)
        if cg == 1 and mg == 1:
            # depthwise: one multiply-add per kernel tap, each over the whole tensor
            y = np.zeros((n, c, ho, wo), dt)
            for i in range(kh):
                for j in range(kw):
                    y += cols[:, :, i, j] * wt[None, :, 0, i, j, None, None]
        else:
            # per group: (Mg, K) @ (K, Ho*Wo) for every image, landing directly in NCHW order
            y = np.matmul(wt.reshape(g, mg, k), cols.reshape(n, g, k, ho * wo))
        y = y.reshape(n, m, ho, wo).astype(np.int64)
        if b is not None:
            y += b.astype(np.int64)[None, :, None, None]
        return y
