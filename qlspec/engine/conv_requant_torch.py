"""ConvRequant with torch's kernels: an int8 GEMM or a float32 convolution, then requantisation in int32.

The arithmetic is `ConvRequant`'s docstring, unchanged; this module only computes it faster than
numpy can, a few images at a time, with activations in NHWC memory (NCHW shape, channels-last
strides) so that a pointwise layer's input is already the left side of its GEMM. Every step is exact:

- **Accumulators.** A pointwise layer over 8-bit inputs is one `torch._int_mm` (int8 x int8,
  int32 accumulation: exact while ``K * 128 * 128 < 2**31``, on a CPU where oneDNN's int8 GEMM is
  exact at all: `int8_gemm_is_exact` measures it); an unsigned input is flipped to int8
  as ``x - 128`` (its sign bit), and the ``128 * sum(w)`` that takes away is added back through the
  requantiser's constants. Any other convolution is torch's float32 convolution, exact while every
  partial sum is an integer below 2**24 (the `Conv.bound` test of `exact_matmul`). Bias and offset
  never touch the accumulator: they are folded into `add`.
- **Requantisation in int32.** ``clip((acc*mul + add) >> s, lo, hi)`` is monotone in `acc` per
  channel, so clamping `acc` first to the interval outside which the output is pinned at `lo` or
  `hi` changes nothing, and keeps ``acc*mul + add`` small: `Int32Requant.plan` works out those
  intervals in int64 per channel and refuses (None) when any endpoint's ``acc*mul + add`` would
  leave int32. When every interval's ends already land on `lo` and `hi`, the final clip is skipped.

`conv_requant` returns None when a condition fails (wide inputs or weights, per-image or spatial
requantiser constants, a bound beyond float32's exact integers, an int32 overflow); the caller then
takes the numpy path.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from qlspec.engine.exact_matmul import max_abs, torch_float_is_exact
from qlspec.engine.ops.requant_shift import shift_of
from qlspec.graph.ir import TensorInfo

if TYPE_CHECKING:
    from qlspec.engine.ops.conv_requant import ConvRequant

CONV_ELEMENTS = 1 << 20  # accumulator values per kernel call (oneDNN and the GEMM like them large)
SLICE_ELEMENTS = 1 << 17  # accumulator values per requantisation pass (they stay in a core's cache)
_INT32 = 1 << 31
_ROW = 256  # values per row of the requantisation's elementwise passes
_F32_EXACT = 1 << 24
_TORCH = {np.dtype(t): getattr(torch, t) for t in ("uint8", "int8", "int16", "int32")}


@dataclass(frozen=True)
class Int32Requant:
    """y = clip((clamp(acc, lo_c, hi_c) * mul_c + add_c) >> shift, lo, hi), per channel c, all in int32.

    The per-channel vectors are repeated to at least `_ROW` values (`rows_of`).

    Built by `plan` so that it equals ``clip(floor(((acc + offset_c)*m_c + a_c + div//2) / div), lo, hi)``
    for every integer |acc + offset_c| <= bound; `clip` is False when the clamped interval already maps
    into [lo, hi].
    """

    acc_lo: torch.Tensor
    acc_hi: torch.Tensor
    mul: torch.Tensor
    add: torch.Tensor
    shift: int
    lo: int
    hi: int
    clip: bool
    channels: int

    @property
    def width(self) -> int:
        """Values per row of the elementwise passes: the channel vectors repeated k times."""
        return self.mul.numel()

    @staticmethod
    def plan(offset: np.ndarray, mul: np.ndarray, add: np.ndarray, shift: int, lo: int, hi: int, bound: int) -> Int32Requant | None:
        """The int32 requantiser of raw accumulators r = acc - `offset`, for per-channel int64 vectors
        `offset`, `mul`, `add` (add without the rounding half) and |acc| <= `bound`; None when some
        channel's arithmetic would leave int32."""
        div = 1 << shift
        if bound >= _INT32 or max_abs(offset) >= _INT32 or max_abs(mul) >= 1 << 29 or max_abs(add) >= 1 << 40 or div >= _INT32:
            return None  # then |r| < 2**32, |r*m| < 2**61, |a| < 2**61: no int64 below can wrap
        m = mul.astype(np.int64)
        a = add.astype(np.int64) + div // 2 + offset * m  # the output is (r*m + a) >> shift
        r_lo, r_hi = -bound - offset, bound - offset  # what r can be

        def out(r: np.ndarray) -> np.ndarray:
            return np.clip(np.right_shift(r * m + a, shift), lo, hi)

        # along u = sign(m)*r the output rises: u*|m| + a >= k*div  <=>  u >= ceil((k*div - a)/|m|)
        am = np.maximum(np.abs(m), 1)
        u_lo = -((a - lo * div) // am)  # smallest u whose output is >= lo
        u_hi = -((a - (hi + 1) * div) // am) - 1  # largest u whose output is <= hi
        tight = [np.where(m < 0, -u_hi, u_lo), np.where(m < 0, -u_lo, u_hi)]
        pin = [np.where(m < 0, hi, lo), np.where(m < 0, lo, hi)]  # the output below and above the interval
        for widen in (0, 1):  # the interval itself, else one step beyond each end and a final clip
            r0: np.ndarray = np.where(m == 0, 0, np.clip(tight[0] - widen, r_lo, r_hi)).astype(np.int64)
            r1: np.ndarray = np.maximum(r0, np.where(m == 0, 0, np.clip(tight[1] + widen, r_lo, r_hi))).astype(np.int64)
            pinned = all(np.all((m == 0) | (r == edge) | (out(r) == p)) for r, edge, p in ((r0, r_lo, pin[0]), (r1, r_hi, pin[1])))
            in_range = all(np.array_equal(np.right_shift(r * m + a, shift), out(r)) for r in (r0, r1))
            fits = all(max_abs(v) < _INT32 for v in (r0, r1, r0 * m, r1 * m, r0 * m + a, r1 * m + a, a))
            if pinned and fits and (in_range or widen):
                k = -(-_ROW // len(m))
                acc_lo, acc_hi, mul_t, add_t = (torch.from_numpy(np.tile(v.astype(np.int32), k)) for v in (r0, r1, m, a))
                return Int32Requant(
                    acc_lo,
                    acc_hi,
                    mul_t,
                    add_t,
                    shift=shift,
                    lo=lo,
                    hi=hi,
                    clip=not in_range,
                    channels=len(m),
                )
        return None

    def rows_of(self, values: int) -> tuple[int, tuple[torch.Tensor, ...]]:
        """(row width, its (acc_lo, acc_hi, mul, add) vectors) for a block of `values` accumulators:
        the channel vectors repeated k times when the block divides into such rows, since a
        per-channel vector of 16 values is too short an inner loop for the vector units."""
        cols = self.width if values % self.width == 0 else self.channels
        return cols, tuple(v[:cols] for v in (self.acc_lo, self.acc_hi, self.mul, self.add))

    def into(self, out: torch.Tensor, acc: torch.Tensor) -> None:
        """out (P, C) = this requantiser applied to acc (P, C), `SLICE_ELEMENTS` values at a time.
        An int32 `acc` is overwritten; a float32 one (integers below 2**24) is converted a slice at a time."""
        cols, (acc_lo, acc_hi, mul, add) = self.rows_of(acc.numel())
        acc, out = acc.reshape(-1, cols), out.view(-1, cols)
        rows = max(1, SLICE_ELEMENTS // cols)
        scratch = None if acc.dtype == torch.int32 else torch.empty((min(rows, len(acc)), cols), dtype=torch.int32)
        for r in range(0, len(acc), rows):
            part = acc[r : r + rows]
            if scratch is not None:
                part = scratch[: len(part)].copy_(part)
            part.clamp_(acc_lo, acc_hi)
            torch.addcmul(add, part, mul, out=part)
            part >>= self.shift
            if self.clip:
                part.clamp_(self.lo, self.hi)
            out[r : r + rows].copy_(part)


def _per_channel(p: np.ndarray, m: int) -> np.ndarray | None:
    """A requantiser constant as a length-m int64 vector, when it is one value per tensor or per channel."""
    try:
        return np.broadcast_to(p, (1, m, 1, 1)).reshape(m).astype(np.int64)
    except ValueError:
        return None


@functools.cache
def int8_gemm_is_exact() -> bool:
    """Whether `torch._int_mm` is exact on this machine: measured once, on products whose pairs
    overflow 16 bits. oneDNN's int8 GEMM is exact where the CPU has VNNI (or AMX), which accumulates
    in int32; without it (`ONEDNN_MAX_CPU_ISA=AVX512_CORE` or AVX2, older CPUs) it multiplies with
    ``vpmaddubsw``, whose 16-bit pair sums saturate, and is not. Then pointwise layers take the float32
    convolution."""
    if not hasattr(torch, "_int_mm"):
        return False
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (64, 256)).astype(np.int8)
    b = rng.integers(-128, 128, (256, 32)).astype(np.int8)
    a[0], b[:, 0] = -128, -128  # and the largest products there are
    with torch.no_grad():
        got = torch._int_mm(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    return bool(np.array_equal(got, a.astype(np.int64) @ b.astype(np.int64)))


@dataclass(frozen=True)
class _Layer:
    """What one ConvRequant needs besides its input: the kernel's weights and the int32 requantiser."""

    int8: bool  # pointwise through `torch._int_mm`, else a float32 convolution
    weight: torch.Tensor  # (K, M) int8, or (M, C/group, kh, kw) float32 channels-last
    requant: Int32Requant
    out_dtype: torch.dtype


_LAYERS: OrderedDict[tuple, tuple[tuple, _Layer | None]] = OrderedDict()  # (op, x dtype, constants' ids) -> (constants, layer)
_LAYERS_KEPT = 256  # a network's worth of layers and then some
_LAYERS_LOCK = threading.Lock()


def _layer(op: ConvRequant, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, mul: np.ndarray, add: np.ndarray) -> _Layer | None:
    """The prepared layer, or None when a condition of the module's docstring fails. Prepared once
    per layer and input dtype: the constants are a graph's, never changed in place, and the cache
    holds them, so their ids stay theirs while the entry lives. Only a float32 layer that needs its
    input's actual values for its bound is prepared afresh each time."""
    key = (op, x.dtype.str, id(w), id(b), id(mul), id(add))
    with _LAYERS_LOCK:
        hit = _LAYERS.get(key)
        if hit is not None:
            _LAYERS.move_to_end(key)
            return hit[1]
    container = op.conv.bound(x, w, b, container=True)
    layer = _prepare(op, x, w, b, mul, add, container)
    if layer is None and container >= _F32_EXACT:
        bound = op.conv.bound(x, w, b)  # the actual values may still be small enough, for this input
        return _prepare(op, x, w, b, mul, add, bound) if bound < _F32_EXACT else None
    with _LAYERS_LOCK:
        _LAYERS[key] = ((w, b, mul, add), layer)
        if len(_LAYERS) > _LAYERS_KEPT:
            _LAYERS.popitem(last=False)
    return layer


def _prepare(
    op: ConvRequant, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, mul: np.ndarray, add: np.ndarray, bound: int
) -> _Layer | None:
    out_dtype = _TORCH.get(TensorInfo.for_range((), op.lo, op.hi).dtype)
    if out_dtype is None or x.dtype.kind not in "iu" or w.dtype.kind not in "iu":
        return None
    m, cg, kh, kw = w.shape
    ch_mul, ch_add = _per_channel(mul, m), _per_channel(add, m)
    if ch_mul is None or ch_add is None:
        return None
    pointwise = kh == kw == 1 and op.group == 1 and not any(op.pads) and op.dilations == (1, 1)
    w_lo, w_hi = (int(w.min()), int(w.max())) if w.size else (0, 0)
    int8 = pointwise and x.dtype.itemsize == 1 and w_lo >= -128 and w_hi <= 127 and cg * 128 * 128 < _INT32 and int8_gemm_is_exact()
    if not int8 and bound >= _F32_EXACT:
        return None
    offset = np.zeros(m, np.int64) if b is None else b.astype(np.int64)
    if int8 and x.dtype == np.uint8:
        offset += 128 * w.reshape(m, cg).astype(np.int64).sum(1)  # r = sum((x - 128) * w), acc = r + 128*sum(w) + b
    plan = Int32Requant.plan(offset, ch_mul, ch_add, shift_of(op.div), op.lo, op.hi, bound)
    if plan is None:
        return None
    if int8:
        weight = torch.from_numpy(w.reshape(m, cg).T.astype(np.int8))
    else:
        weight = torch.from_numpy(w.astype(np.float32)).contiguous(memory_format=torch.channels_last)
    return _Layer(int8, weight, plan, out_dtype)


def conv_requant(
    op: ConvRequant, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, mul: np.ndarray, add: np.ndarray
) -> np.ndarray | None:
    """`op.run(x, w, b, mul, add)` with torch's kernels, or None when a condition of the module's docstring fails."""
    layer = _layer(op, x, w, b, mul, add)
    if layer is None or not (layer.int8 or torch_float_is_exact()):
        return None
    if min(x.strides, default=0) < 0 or not x.dtype.isnative:
        x = np.ascontiguousarray(x, x.dtype.newbyteorder("="))  # what torch.from_numpy takes
    n, m = x.shape[0], w.shape[0]
    _, _, ho, wo = op.conv.out_shape(TensorInfo(x.shape, 32, True), TensorInfo(w.shape, 8, True))
    out = torch.empty((n, ho, wo, m), dtype=layer.out_dtype)
    step = max(1, CONV_ELEMENTS // max(1, m * ho * wo))  # images per kernel call
    with torch.no_grad(), torch.backends.nnpack.flags(enabled=False):  # never a Winograd/FFT kernel: those round
        kernel = _int8_pointwise(x, layer.weight, op.strides) if layer.int8 else _float_conv(x, layer.weight, op)
        for s in range(0, n, step):
            layer.requant.into(out[s : s + step].view(-1, m), kernel(slice(s, min(n, s + step))))
    return out.numpy().transpose(0, 3, 1, 2)


def _int8_pointwise(x: np.ndarray, wt: torch.Tensor, strides: tuple[int, int]) -> Callable[[slice], torch.Tensor]:
    """images -> raw int32 accumulators (P, M) of a 1x1 convolution: `torch._int_mm` of the NHWC
    input, an unsigned one flipped to ``x - 128``, by the (K, M) int8 weights `wt`."""
    c = wt.shape[0]
    xs = torch.from_numpy(x).permute(0, 2, 3, 1)[:, :: strides[0], :: strides[1], :]  # NHWC, a free view when x is

    def run(images: slice) -> torch.Tensor:
        left = xs[images].reshape(-1, c)
        if x.dtype == np.uint8:
            left = left.view(torch.int8) ^ -128
        if left.stride() != (c, 1):  # also for a dimension of 1, which `contiguous` would leave as it is
            left = torch.empty(left.shape, dtype=torch.int8).copy_(left)
        return torch._int_mm(left, wt)

    return run


def _float_conv(x: np.ndarray, wt: torch.Tensor, op: ConvRequant) -> Callable[[slice], torch.Tensor]:
    """images -> raw float32 accumulators (P, M): torch's convolution on channels-last float32
    (oneDNN's direct kernels), exact below 2**24, by the float32 weights `wt`."""
    m = wt.shape[0]
    nhwc = x.transpose(0, 2, 3, 1)
    xs = torch.from_numpy(x)
    pt, pl, pb, pr = op.pads
    symmetric = (pt, pl) == (pb, pr)

    def run(images: slice) -> torch.Tensor:
        if nhwc.flags.c_contiguous:  # numpy converts a contiguous block two to three times faster than torch here
            xf = torch.from_numpy(nhwc[images].astype(np.float32)).permute(0, 3, 1, 2)
        else:
            xf = xs[images].contiguous(memory_format=torch.channels_last).float()
        if not symmetric:
            xf = F.pad(xf, (pl, pr, pt, pb)).contiguous(memory_format=torch.channels_last)
        acc = F.conv2d(xf, wt, stride=op.strides, padding=(pt, pl) if symmetric else 0, dilation=op.dilations, groups=op.group)
        return acc.permute(0, 2, 3, 1).reshape(-1, m)

    return run
