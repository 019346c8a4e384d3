"""Conv, ConvRequant and RequantShift with torch's kernels: an int8 GEMM or a float32 convolution,
and requantisation in int32.

The arithmetic is each op's docstring, unchanged; this module only computes it faster than numpy
can, a few images at a time, with activations in NHWC memory (NCHW shape, channels-last strides) so
that a pointwise layer's input is already the left side of its GEMM. Every step is exact:

- **Accumulators** (`_Kernel`). A pointwise layer over 8-bit inputs is one `torch._int_mm` (int8 x
  int8, int32 accumulation: exact while ``K * 128 * 128 < 2**31``, on a CPU where oneDNN's int8 GEMM
  is exact at all: `int8_gemm_is_exact` measures it); an unsigned input is flipped to int8 as
  ``x - 128`` (its sign bit), and the ``128 * sum(w)`` that takes away is an offset added back (into
  the requantiser's `add` for ConvRequant). Any other convolution is torch's float32 convolution,
  exact while every partial sum is an integer below 2**24 (the `Conv.bound` test of `exact_matmul`)
  and torch keeps float32 exact (`torch_float_is_exact`).
- **Requantisation in int32** (`Int32Requant`). ``clip((acc*mul + add) >> s, lo, hi)`` is monotone
  in `acc` per channel, so clamping `acc` first to the interval outside which the output is pinned
  at `lo` or `hi` changes nothing, and keeps ``acc*mul + add`` small: `Int32Requant.plan` works out
  those intervals in int64 per channel and refuses (None) when any endpoint's ``acc*mul + add``
  would leave int32. When every interval's ends already land on `lo` and `hi`, the final clip is
  skipped.

`conv_requant`, `conv_accumulators` and `requant_shift` return None when a condition fails (wide
inputs or weights, per-image or spatial requantiser constants, a bound beyond float32's exact
integers, an int32 overflow); the op then takes its numpy path.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, TypeVar, cast

import numpy as np
import torch
import torch.nn.functional as F

from qlspec.engine.exact_matmul import F32_EXACT, max_abs, torch_float_is_exact
from qlspec.engine.ops.requant_shift import shift_of
from qlspec.graph.ir import TensorInfo

if TYPE_CHECKING:
    from qlspec.engine.ops.conv import Conv
    from qlspec.engine.ops.conv_requant import ConvRequant
    from qlspec.engine.ops.requant_shift import RequantShift

T = TypeVar("T")

CONV_ELEMENTS = 1 << 20  # accumulator values per kernel call (oneDNN and the GEMM like them large)
SLICE_ELEMENTS = 1 << 17  # accumulator values per requantisation pass (they stay in a core's cache)
_INT32 = 1 << 31
_ROW = 256  # values per row of the requantisation's elementwise passes
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

    def into(self, out: torch.Tensor, acc: torch.Tensor, overwrite: bool = True) -> None:
        """out (P, C) = this requantiser applied to integer acc (P, C), `SLICE_ELEMENTS` values at a
        time. An int32 `acc` is overwritten unless `overwrite` is False; any other (a float32 one
        holds integers below 2**24) is converted a slice at a time."""
        cols, (acc_lo, acc_hi, mul, add) = self.rows_of(acc.numel())
        acc, out = acc.reshape(-1, cols), out.view(-1, cols)
        rows = max(1, SLICE_ELEMENTS // cols)
        in_place = overwrite and acc.dtype == torch.int32
        scratch = None if in_place else torch.empty((min(rows, len(acc)), cols), dtype=torch.int32)
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
class _Kernel:
    """A convolution's accumulators through torch: raw values r (P, M), acc = r + `offset` per channel."""

    int8: bool  # pointwise through `torch._int_mm`, else a float32 convolution
    weight: torch.Tensor  # (K, M) int8, or (M, C/group, kh, kw) float32 channels-last
    offset: np.ndarray  # int64 (M,): the bias, and 128*sum(w) for an unsigned input flipped to int8
    w_shape: tuple[int, ...]  # (M, C/group, kh, kw)

    @staticmethod
    def prepare(conv: Conv, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, bound: int) -> _Kernel | None:
        if x.dtype.kind not in "iu" or w.dtype.kind not in "iu":
            return None
        m, cg, kh, kw = w.shape
        if x.shape[1] != cg * conv.group or (b is not None and b.shape != (m,)):
            return None
        pointwise = kh == kw == 1 and conv.group == 1 and not any(conv.pads) and conv.dilations == (1, 1)
        w_lo, w_hi = (int(w.min()), int(w.max())) if w.size else (0, 0)
        eight_bit = x.dtype.itemsize == 1 and w_lo >= -128 and w_hi <= 127
        int8 = pointwise and eight_bit and cg * 128 * 128 < _INT32 and int8_gemm_is_exact()
        if not int8 and bound >= F32_EXACT:
            return None
        offset = np.zeros(m, np.int64) if b is None else b.astype(np.int64)
        if int8 and x.dtype == np.uint8:
            offset += 128 * w.reshape(m, cg).astype(np.int64).sum(1)  # r = sum((x - 128) * w), acc = r + 128*sum(w) + b
        if bound >= _INT32 or max_abs(offset) >= _INT32:
            return None  # acc itself may not fit int32: the numpy path says so
        if int8:
            weight = torch.from_numpy(w.reshape(m, cg).T.astype(np.int8))
        else:
            weight = torch.from_numpy(w.astype(np.float32)).contiguous(memory_format=torch.channels_last)
        return _Kernel(int8, weight, offset, w.shape)

    def usable(self) -> bool:
        """False while torch may round float32 convolutions (`torch_float_is_exact`)."""
        return self.int8 or torch_float_is_exact()

    def run(self, x: np.ndarray, conv: Conv) -> Iterator[tuple[slice, torch.Tensor]]:
        """(images, their raw accumulators (P, M)), a few images at a time."""
        x = _torch_ready(x)
        n, m = x.shape[0], self.w_shape[0]
        _, _, ho, wo = conv.out_shape(TensorInfo(x.shape, 32, True), TensorInfo(self.w_shape, 8, True))
        step = max(1, CONV_ELEMENTS // max(1, m * ho * wo))  # images per kernel call
        kernel = _int8_pointwise(x, self.weight, conv.strides) if self.int8 else _float_conv(x, self.weight, conv)
        for s in range(0, n, step):
            images = slice(s, min(n, s + step))
            yield images, kernel(images)


@dataclass(frozen=True)
class _Layer:
    """What one ConvRequant needs besides its input: its kernel and the int32 requantiser."""

    kernel: _Kernel
    requant: Int32Requant
    out_dtype: torch.dtype


_PREPARED: OrderedDict[tuple, tuple[tuple, object]] = OrderedDict()  # (op, x dtype, constants' ids) -> (constants, prepared)
_PREPARED_KEPT = 512  # two networks' worth of layers and then some
_PREPARED_LOCK = threading.Lock()


def _prepared(op: object, x: np.ndarray, consts: tuple, bound_of: Callable[..., int], build: Callable[[int], T | None]) -> T | None:
    """`build(bound)` for layer `op` on input `x`, prepared once per layer and input dtype: the
    constants are a graph's, never changed in place, and the cache holds them, so their ids stay
    theirs while the entry lives. The bound is `bound_of(container=True)` (from x's dtype); a layer
    that needs its input's actual values for a float32 bound is built afresh for each input."""
    key = (op, x.dtype.str, *(id(c) for c in consts))
    with _PREPARED_LOCK:
        hit = _PREPARED.get(key)
        if hit is not None:
            _PREPARED.move_to_end(key)
            return cast("T | None", hit[1])
    container = bound_of(container=True)
    built = build(container)
    if built is None and container >= F32_EXACT:
        bound = bound_of()  # the actual values may still be small enough, for this input
        return build(bound) if bound < F32_EXACT else None
    with _PREPARED_LOCK:
        _PREPARED[key] = (consts, built)
        if len(_PREPARED) > _PREPARED_KEPT:
            _PREPARED.popitem(last=False)
    return built


def _layer(
    op: ConvRequant, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, mul: np.ndarray, add: np.ndarray, bound: int
) -> _Layer | None:
    out_dtype = _TORCH.get(TensorInfo.for_range((), op.lo, op.hi).dtype)
    m = w.shape[0]
    ch_mul, ch_add = _per_channel(mul, m), _per_channel(add, m)
    kernel = _Kernel.prepare(op.conv, x, w, b, bound)
    if out_dtype is None or ch_mul is None or ch_add is None or kernel is None:
        return None
    plan = Int32Requant.plan(kernel.offset, ch_mul, ch_add, shift_of(op.div), op.lo, op.hi, bound)
    return None if plan is None else _Layer(kernel, plan, out_dtype)


def conv_requant(
    op: ConvRequant, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, mul: np.ndarray, add: np.ndarray
) -> np.ndarray | None:
    """`op.run(x, w, b, mul, add)` with torch's kernels, or None when a condition of the module's docstring fails."""
    conv = op.conv
    if x.ndim != 4 or w.ndim != 4:
        return None  # the numpy path says what is wrong with a malformed layer
    layer = _prepared(op, x, (w, b, mul, add), partial(conv.bound, x, w, b), partial(_layer, op, x, w, b, mul, add))
    if layer is None or not layer.kernel.usable():
        return None
    out = _nhwc_out(x, w, conv, layer.out_dtype)
    with torch.no_grad(), torch.backends.nnpack.flags(enabled=False):  # never a Winograd/FFT kernel: those round
        for images, raw in layer.kernel.run(x, conv):
            layer.requant.into(out[images].view(-1, out.shape[-1]), raw)
    return out.numpy().transpose(0, 3, 1, 2)


def conv_accumulators(conv: Conv, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray | None:
    """`conv.run(x, w, b)` (int32 accumulators) with torch's kernels, or None when a condition fails."""
    if x.ndim != 4 or w.ndim != 4:
        return None  # the numpy path says what is wrong with a malformed layer
    kernel = _prepared(conv, x, (w, b), partial(conv.bound, x, w, b), partial(_Kernel.prepare, conv, x, w, b))
    if kernel is None or not kernel.usable():
        return None
    out = _nhwc_out(x, w, conv, torch.int32)
    offset = torch.from_numpy(kernel.offset.astype(np.int32))
    with torch.no_grad(), torch.backends.nnpack.flags(enabled=False):
        for images, raw in kernel.run(x, conv):
            y = out[images].view(-1, out.shape[-1])
            if raw.dtype == torch.int32:
                torch.add(raw, offset, out=y)
            else:
                y.copy_(raw).add_(offset)
    return out.numpy().transpose(0, 3, 1, 2)


def requant_shift(op: RequantShift, x: np.ndarray, mul: np.ndarray, add: np.ndarray) -> np.ndarray | None:
    """`op.run(x, mul, add)` for an NCHW integer `x` and per-channel constants, in int32 (`Int32Requant`
    on x's actual extremes), or None when a condition fails."""
    out_dtype = _TORCH.get(TensorInfo.for_range((), op.lo, op.hi).dtype)
    if x.ndim != 4 or x.dtype.newbyteorder("=") not in _TORCH or out_dtype is None or not x.size:
        return None
    c = x.shape[1]
    ch_mul, ch_add = _per_channel(mul, c), _per_channel(add, c)
    if ch_mul is None or ch_add is None:
        return None
    x = _torch_ready(x)
    xt = torch.from_numpy(x).permute(0, 2, 3, 1)
    lo, hi = torch.aminmax(xt)
    plan = Int32Requant.plan(np.zeros(c, np.int64), ch_mul, ch_add, shift_of(op.div), op.lo, op.hi, max(-int(lo), int(hi)))
    if plan is None:
        return None
    out = torch.empty(xt.shape, dtype=out_dtype)
    with torch.no_grad():
        plan.into(out.view(-1, c), xt.reshape(-1, c), overwrite=False)
    return out.numpy().transpose(0, 3, 1, 2)


def _torch_ready(x: np.ndarray) -> np.ndarray:
    """`x`, or a copy torch.from_numpy takes when it has negative strides or foreign byte order."""
    if min(x.strides, default=0) < 0 or not x.dtype.isnative:
        return np.ascontiguousarray(x, x.dtype.newbyteorder("="))
    return x


def _nhwc_out(x: np.ndarray, w: np.ndarray, conv: Conv, dtype: torch.dtype) -> torch.Tensor:
    n, m = x.shape[0], w.shape[0]
    _, _, ho, wo = conv.out_shape(TensorInfo(x.shape, 32, True), TensorInfo(w.shape, 8, True))
    return torch.empty((n, ho, wo, m), dtype=dtype)


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


def _float_conv(x: np.ndarray, wt: torch.Tensor, op: Conv) -> Callable[[slice], torch.Tensor]:
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
