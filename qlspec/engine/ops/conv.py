"""Conv: 2-D integer convolution with an exact int32 accumulator."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from qlspec.engine.exact_matmul import exact_dtype, max_abs
from qlspec.engine.ops.base import Op, require, spatial_out
from qlspec.engine.windows import windows
from qlspec.graph.ir import TensorInfo

SLICE_ELEMENTS = 1 << 16  # accumulator values per batch slice: a slice's buffers stay in a core's cache
BAND_COLUMNS = 16  # output columns of one block of a depthwise layer's banded products


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

    def bound(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *, container: bool = False) -> int:
        """A bound on |y| and on every partial sum of it: K * max|x| * max|w| + max|b| (actual values;
        with `container`, max|x| is the largest magnitude x's integer dtype holds: no pass over x)."""
        _, cg, kh, kw = w.shape
        x_max = max(-int(np.iinfo(x.dtype).min), int(np.iinfo(x.dtype).max)) if container else max_abs(x)
        return cg * kh * kw * x_max * max_abs(w) + (0 if b is None else max_abs(b))

    def slices(
        self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, bound: int | None = None
    ) -> Iterator[tuple[slice, np.ndarray]]:
        """y, a few images at a time: (batch slice, its NCHW y, maybe a transposed view) in the
        cheapest dtype that holds every partial sum exactly (`exact_dtype` of `bound`: float32 or
        float64 BLAS, else int64), so that no product or sum is ever rounded, in whatever order it is
        added (terms that are products with 0 add exactly 0). Slices are small enough for a core's
        cache. `bound`: `self.bound(x, w, b)` when the caller has it already."""
        n = x.shape[0]
        m, cg, kh, kw = w.shape
        _, _, ho, wo = self.out_shape(TensorInfo(x.shape, 32, True), TensorInfo(w.shape, 8, True))
        dt = exact_dtype(self.bound(x, w, b) if bound is None else bound)
        wt = w.astype(dt)
        bt = None if b is None else b.astype(dt)
        depthwise = cg == 1 and m == self.group
        band = self._band(wt, wo) if depthwise else None
        step = max(1, SLICE_ELEMENTS // max(1, m * ho * wo))
        for s in range(0, n, step):
            part = slice(s, min(n, s + step))
            if band is not None:
                y = self._depthwise_banded(x[part], band, (kh, kw), (ho, wo))
            else:
                y = self._matmul(x[part], wt, (ho, wo))
            if bt is not None:
                y += bt[:, None, None]
            yield part, y

    def _padded(self, x: np.ndarray, dt: np.dtype) -> np.ndarray:
        """x as `dt`, zero-padded."""
        n, c, h, wd = x.shape
        pt, pl, pb, pr = self.pads
        if not any(self.pads):
            return x.astype(dt)
        xp = np.zeros((n, c, h + pt + pb, wd + pl + pr), dt)
        xp[:, :, pt : pt + h, pl : pl + wd] = x
        return xp

    def _band(self, w: np.ndarray, wo: int) -> np.ndarray:
        """Depthwise weights as one banded matrix per channel, (C, kh * Bin, Bo): Bo output columns (at
        most `BAND_COLUMNS`) from Bin input columns, B[c, i*Bin + ox*sw + j*dw, ox] = w[c, 0, i, j], zero
        elsewhere (`_depthwise_banded`)."""
        c, _, kh, kw = w.shape
        bo, bin_ = self._block_columns(wo), self._block_in(wo, kw)
        band = np.zeros((c, kh, bin_, bo), w.dtype)
        ox = np.arange(bo)
        for i in range(kh):
            for j in range(kw):
                band[:, i, ox * self.strides[1] + j * self.dilations[1], ox] = w[:, 0, i, j, None]
        return band.reshape(c, kh * bin_, bo)

    @staticmethod
    def _block_columns(wo: int) -> int:
        return min(wo, BAND_COLUMNS)

    def _block_in(self, wo: int, kw: int) -> int:
        """Input columns one block of output columns reads."""
        return (self._block_columns(wo) - 1) * self.strides[1] + (kw - 1) * self.dilations[1] + 1

    def _depthwise_banded(self, x: np.ndarray, band: np.ndarray, kernel: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
        """Depthwise as BLAS products: output rows cut into blocks of Bo columns, and per channel
        (N*Ho*blocks, kh*Bin) @ (kh*Bin, Bo), the left side the kh*Bin inputs each block reads.
        Every output is its kh*kw true products plus products with 0, which add exactly 0, so the sum
        is as exact as `bound` says. Blocks keep those zero terms few: kh*Bin terms per output rather
        than kh times the padded width."""
        n, c, h, wd = x.shape
        (kh, kw), (ho, wo), (sh, sw), (dh, _) = kernel, out_hw, self.strides, self.dilations
        bo, bin_ = self._block_columns(wo), self._block_in(wo, kw)
        blocks = -(-wo // bo)
        pt, pl, pb, pr = self.pads
        width = max(wd + pl + pr, (blocks - 1) * bo * sw + bin_)  # the last block may read zeros past the padding
        xp = np.zeros((n, c, h + pt + pb, width), band.dtype)
        xp[:, :, pt : pt + h, pl : pl + wd] = x
        s_n, s_c, s_h, s_w = xp.strides
        reads = as_strided(
            xp, shape=(c, n, ho, blocks, kh, bin_), strides=(s_c, s_n, s_h * sh, s_w * sw * bo, s_h * dh, s_w), writeable=False
        )
        y = np.matmul(np.ascontiguousarray(reads).reshape(c, n * ho * blocks, kh * bin_), band)  # contiguous, as BLAS wants it
        return y.reshape(c, n, ho, blocks * bo)[..., :wo].transpose(1, 0, 2, 3)

    def _matmul(self, x: np.ndarray, w: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
        """Per group, (Mg, K) @ (K, Ho*Wo) for every image (im2col), landing directly in NCHW order."""
        n, _, _, _ = x.shape
        m, cg, kh, kw = w.shape
        ho, wo = out_hw
        g, k = self.group, cg * kh * kw
        if kh == kw == 1 and self.strides == (1, 1) and not any(self.pads):
            cols = x.astype(w.dtype).reshape(n, g, k, ho * wo)  # pointwise: the input is its own im2col
        else:
            cols = windows(self._padded(x, w.dtype), (kh, kw), self.strides, self.dilations, out_hw).reshape(n, g, k, ho * wo)
        return np.matmul(w.reshape(g, m // g, k), cols).reshape(n, m, ho, wo)

    def run(self, x, w, b=None):
        from qlspec.engine.torch_kernels import conv_accumulators  # torch loads only when a graph runs

        fast = conv_accumulators(self, x, w, b)  # int32 in NHWC memory, when torch's kernels are exact for it
        if fast is not None:
            return fast
        y = np.empty(self.out_shape(TensorInfo(x.shape, 32, True), TensorInfo(w.shape, 8, True)), np.int64)
        for part, acc in self.slices(x, w, b):
            y[part] = acc
        return y
