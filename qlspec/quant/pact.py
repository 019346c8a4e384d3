"""PACT fake-quantisation modules, with QuantLib's semantics (pulp-platform/quantlib, algorithms/pact).

The quantisation function (`PACTQuantFunc`), for bounds ``lo < hi`` and ``n_levels`` levels:

    eps = (hi - lo) / (n_levels - 1)                    (not differentiated, as in QuantLib)
    q   = floor(x / eps)   (activations; floor(x/eps + 1/2), half up, with rounding)
          or round(x / eps)   (weights; half to even, as QuantLib)
    q   = clip(q, q_lo, q_hi);  q = q_hi where x >= hi;  q = q_lo where x < lo
    y   = q * eps

Every quantiser here has zero point 0: unsigned ones have ``lo = 0`` and ``[q_lo, q_hi] = [0, n-1]``;
signed ones are QuantLib's "almost symmetric" ``lo = -m``, ``hi = m*(n-2)/n``, so ``eps = 2m/n``,
``lo/eps = -n/2`` and ``[q_lo, q_hi] = [-n/2, n/2-1]``. QuantLib writes ``floor((clip(x, lo, hi+1e-7)
- lo)/eps)*eps + lo``; with a zero point of 0 that is the same function, and our form keeps ``y`` an
exact integer multiple of ``eps`` (the 1e-7 nudge is below float32 resolution for bounds > ~1, so
QuantLib can floor ``x = hi`` one level low; we clip in the integer domain instead).

Straight-through estimator (QuantLib's PACTQuantFunc.backward, after Hubara et al.):

    dL/dx  = dL/dy  where lo <= x < hi, else 0
    dL/dhi = sum of dL/dy where x >= hi         (summed over all dims but 0 for per-channel bounds)
    dL/dlo = sum of dL/dy where x <  lo

i.e. the derivative of ``clip(x, lo, hi)``; the dependence of in-range outputs on ``eps`` is ignored.
Signed quantisers learn ``lo`` only and derive ``hi = -lo*(n-2)/n`` (QuantLib's AlmostSymmQuantFunc),
so their ``dL/dlo`` also collects ``-(n-2)/n`` times the gradient at the upper bound.

What F2T reads from these modules: ``n_levels``, ``signed``, ``int_range`` (``(q_lo, q_hi)``),
``get_eps()`` (activations; shape ``(1,)``), ``get_eps_w()`` / ``weight_int`` /
``get_eps_out(eps_in)`` / ``get_bias_int(eps_in)`` (convolutions and linears), ``rounding`` (activations:
floor or round), and ``clip_lo`` / ``clip_hi``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qlspec.quant import pact_native, ranges
from qlspec.quant.observer import ActivationObserver

if TYPE_CHECKING:
    _Module = nn.Module  # the weight-quantiser mixin is only ever combined with a Module (Conv2d, Linear)
else:
    _Module = object

ActKind = Literal["identity", "relu", "relu6"]
InitMethod = Literal["max", "std", "const", "percentile", "mse"]


RULES = ("floor", "half_up", "half_even")


class PACTQuantFunc(torch.autograd.Function):
    """``y = clip(rule(x/eps), q_lo, q_hi) * eps`` with PACT's straight-through estimator.

    Arguments: ``x``; ``eps`` (broadcastable to x, no gradient); ``clip_lo``, ``clip_hi`` (the real
    bounds, broadcastable to x: shape ``(1,)`` or per-channel ``(C,1,...)``; they receive the STE
    gradients, reduced to their own shape); ``q_lo``, ``q_hi`` (integers, ``q_lo*eps == clip_lo``
    and ``q_hi*eps == clip_hi`` up to float rounding); ``rule``: ``'floor'`` (``floor(v)``),
    ``'half_up'`` (``floor(v + 0.5)``) or ``'half_even'`` (``round(v)``), ``v = x/eps`` in x's dtype.
    Where ``x >= clip_hi`` the code is ``q_hi`` and where ``x < clip_lo`` it is ``q_lo``, whatever
    the rounding of ``x/eps`` (the clamp already gives that unless ``clip_hi/eps`` rounds below the
    last level, which `_pin_to_bounds` checks once per call on the bounds, not per element).

    The rules are exact, with no tolerance: the integer network applies the same rule to the exact
    real value (`qlspec.export.requant`), and the evaluation that must agree with it bit for bit runs
    that integer arithmetic itself rather than this float approximation of it.

    Cost: with one bound per tensor (activations) the forward and backward passes are one fused C
    loop each (`pact_native`, the same float32 operations; the bounds' gradients summed in double)
    where the kernel can be built; otherwise, and for float64, torch: four passes forward, and a
    backward that reads the saved input through PyTorch's vectorised ``hardtanh_backward`` and
    ``threshold_backward`` kernels (masks would need ``torch.where`` over a random pattern, which ran
    at a sixth of their speed; bench/RESULTS.md). Per-channel bounds (weights, small tensors) keep
    two bool masks.
    """

    @staticmethod
    def forward(ctx, x: Tensor, eps: Tensor, clip_lo: Tensor, clip_hi: Tensor, q_lo: int, q_hi: int, rule: str) -> Tensor:
        ctx.lo_shape, ctx.hi_shape = clip_lo.shape, clip_hi.shape
        ctx.scalar_bounds = clip_lo.numel() == 1 and clip_hi.numel() == 1 and clip_lo.dtype == clip_hi.dtype == x.dtype
        if not ctx.scalar_bounds:
            ctx.save_for_backward(x < clip_lo, x >= clip_hi)
            return quantize_with_torch(x, eps, clip_lo, clip_hi, q_lo, q_hi, rule)
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi = clip_lo.item(), clip_hi.item()
        y = pact_native.forward(x, eps.item(), ctx.lo, ctx.hi, q_lo, q_hi, rule) if eps.numel() == 1 and eps.dtype == x.dtype else None
        return quantize_with_torch(x, eps, clip_lo, clip_hi, q_lo, q_hi, rule) if y is None else y

    @staticmethod
    def backward(ctx, grad: Tensor):
        need_x, need_lo, need_hi = (ctx.needs_input_grad[i] for i in (0, 2, 3))
        if ctx.scalar_bounds:
            (x,) = ctx.saved_tensors
            fused = pact_native.backward(x, grad, ctx.lo, ctx.hi, need_x)
            if fused is not None:
                grad_x, sum_lo, sum_hi = fused
                grad_lo = torch.tensor(sum_lo, dtype=x.dtype).reshape(ctx.lo_shape) if need_lo else None
                grad_hi = torch.tensor(sum_hi, dtype=x.dtype).reshape(ctx.hi_shape) if need_hi else None
                return grad_x, None, grad_lo, grad_hi, None, None, None
            # hardtanh_backward zeroes where x <= min or x >= max: min = the float below lo, so x < lo
            grad_x = torch.ops.aten.hardtanh_backward(grad, x, _next_down(ctx.lo, x.dtype), ctx.hi) if need_x else None
            grad_lo = torch.where(x < ctx.lo, grad, 0.0).sum().reshape(ctx.lo_shape) if need_lo else None
            # threshold_backward keeps grad where x > threshold: the float below hi, so x >= hi
            above = torch.ops.aten.threshold_backward(grad, x, _next_down(ctx.hi, x.dtype)) if need_hi else None
            grad_hi = above.sum().reshape(ctx.hi_shape) if above is not None else None
            return grad_x, None, grad_lo, grad_hi, None, None, None
        below, above = ctx.saved_tensors
        zero = torch.zeros((), dtype=grad.dtype, device=grad.device)
        grad_x = torch.where(below | above, zero, grad) if need_x else None
        grad_lo = torch.where(below, grad, zero).sum_to_size(ctx.lo_shape) if need_lo else None
        grad_hi = torch.where(above, grad, zero).sum_to_size(ctx.hi_shape) if need_hi else None
        return grad_x, None, grad_lo, grad_hi, None, None, None


def quantize_with_torch(x: Tensor, eps: Tensor, clip_lo: Tensor, clip_hi: Tensor, q_lo: int, q_hi: int, rule: str) -> Tensor:
    """PACTQuantFunc's forward arithmetic with torch: four passes over `x` (and `_pin_to_bounds`)."""
    q = round_by_(x / eps, rule).clamp_(q_lo, q_hi)
    _pin_to_bounds(q, x, eps, clip_lo, clip_hi, q_lo, q_hi, rule)
    return q.mul_(eps)


def _next_down(bound: float, dtype: torch.dtype) -> float:
    """The largest value of `dtype` below `bound` (one of its values), as a Python float (exact for float32 and float64)."""
    return torch.nextafter(torch.tensor(bound, dtype=dtype), torch.tensor(-math.inf, dtype=dtype)).item()


def _pin_to_bounds(q: Tensor, x: Tensor, eps: Tensor, clip_lo: Tensor, clip_hi: Tensor, q_lo: int, q_hi: int, rule: str) -> None:
    """Set ``q = q_hi`` where ``x >= clip_hi`` and ``q = q_lo`` where ``x < clip_lo``, in place.

    Division by a positive ``eps`` and the rounding rules are monotone, so ``x >= clip_hi`` gives
    ``rule(x/eps) >= rule(clip_hi/eps)`` (and likewise below ``clip_lo``): when the bounds' own codes
    already reach ``q_hi`` (``q_lo``), the clamp has pinned every such element and the per-element
    comparison is skipped. Otherwise (e.g. ``clip_hi/eps`` rounds to 254.99998 under ``floor``) the
    elements are found and set.
    """
    dtype = q.dtype
    if not bool((round_by(clip_hi.to(dtype) / eps.to(dtype), rule) >= q_hi).all()):
        q.masked_fill_(x >= clip_hi, q_hi)
    if not bool((round_by(clip_lo.to(dtype) / eps.to(dtype), rule) <= q_lo).all()):
        q.masked_fill_(x < clip_lo, q_lo)


def round_by_(v: Tensor, rule: str) -> Tensor:
    """`round_by` in place on `v` (a temporary the caller owns); returns `v`."""
    if rule == "floor":
        return v.floor_()
    if rule == "half_up":
        return v.add_(0.5).floor_()
    if rule == "half_even":
        return v.round_()
    raise ValueError(f"unknown rounding rule {rule!r} (one of {', '.join(RULES)})")


def round_by(v: Tensor, rule: str) -> Tensor:
    """`v` to integers by `rule` (one of `RULES`): floor, half up (``floor(v + 0.5)``) or half to even."""
    return round_by_(v.clone(), rule)


def pact_quantize(x: Tensor, eps: Tensor, clip_lo: Tensor, clip_hi: Tensor, q_lo: int, q_hi: int, rule: str) -> Tensor:
    """Functional form of `PACTQuantFunc` (keyword-friendly)."""
    return PACTQuantFunc.apply(x, eps, clip_lo, clip_hi, q_lo, q_hi, rule)


def _check_levels(n_levels: int) -> None:
    if n_levels < 4 or n_levels % 2:
        raise ValueError(f"n_levels must be an even number >= 4 (2 bits or more), got {n_levels}")


# --------------------------------------------------------------------------------------------------
# activations


class _PACTActivation(nn.Module):
    """Base of the activation quantisers: float mode with statistics until started, then PACT.

    Before ``started`` (a bool buffer) the module computes its float function (`act_kind`) and, while
    `observing`, records statistics of that float output in `observer`. `init_clip` sets the bounds
    from the statistics; the controller (or `ptq.calibrate`) then sets ``started``.
    """

    signed: bool = False
    started: Tensor  # buffer

    def __init__(
        self,
        n_levels: int = 256,
        init: InitMethod = "const",
        init_clip: float = 6.0,
        learn_clip: bool = True,
        rounding: bool = False,
        act_kind: ActKind = "relu",
        nb_std: float = 3.0,
        percentile: float = 99.9,
    ) -> None:
        super().__init__()
        _check_levels(n_levels)
        self.n_levels = n_levels
        self.init = init
        self.init_value = float(init_clip)
        self.learn_clip = learn_clip
        self.rounding = rounding
        self.act_kind = act_kind
        self.nb_std = nb_std
        self.percentile = percentile
        self.fixed = False  # a fixed quantiser (the pixel input) ignores init_clip and calibration
        self.observing = True
        self.observer = ActivationObserver(keep_samples=init in ("percentile", "mse"))
        self.register_buffer("started", torch.tensor(False))

    # -- bounds ------------------------------------------------------------------------------------
    @property
    def int_range(self) -> tuple[int, int]:
        """``(q_lo, q_hi)``: ``(0, n-1)`` unsigned, ``(-n/2, n/2-1)`` signed."""
        n = self.n_levels
        return (-(n // 2), n // 2 - 1) if self.signed else (0, n - 1)

    def bounds(self) -> tuple[Tensor, Tensor]:
        """``(lo, hi)`` as used in the forward pass (differentiable where learned)."""
        raise NotImplementedError

    def get_eps(self) -> Tensor:
        """``eps = (hi - lo)/(n_levels - 1)``, shape ``(1,)``, detached (QuantLib's ``get_eps``)."""
        lo, hi = self.bounds()
        return ((hi - lo) / (self.n_levels - 1)).detach().clone()

    def set_bound(self, magnitude: float | Tensor) -> None:
        """Set the bounds from a magnitude: ``hi`` (unsigned) or ``-lo`` (signed), activation units."""
        raise NotImplementedError

    def clip_parameters(self) -> list[nn.Parameter]:
        """The learnable clipping parameters (for the optimiser's separate group)."""
        raise NotImplementedError

    # -- statistics --------------------------------------------------------------------------------
    def statistic_bound(self, method: InitMethod, ema: bool = True) -> Tensor:
        """The bound magnitude `method` derives from the recorded statistics (see `QuantConfig`).

        ``'max'`` uses the EMA extrema when `ema` (QuantLib QAT) and the absolute ones otherwise
        (min/max calibration). Signed quantisers take the larger of the two sides.
        """
        o = self.observer
        if method == "const":
            return torch.tensor([self.init_value])
        if o.n_batches == 0:
            raise RuntimeError(
                f"{type(self).__name__}: init {method!r} needs statistics, but nothing was observed in float mode; "
                "run some batches before starting quantisation (or use init 'const')"
            )
        if method == "max":
            lo, hi = (o.ema_min, o.ema_max) if ema else (o.min, o.max)
            assert lo is not None and hi is not None  # set by the first batch observed
            m = torch.maximum(hi, -lo) if self.signed else hi
        elif method == "std":
            assert o.mean is not None and o.var is not None  # set by the first batch observed
            sd = o.var.clamp_min(0).sqrt()
            m = (
                torch.maximum((o.mean + self.nb_std * sd).abs(), (o.mean - self.nb_std * sd).abs())
                if self.signed
                else o.mean + self.nb_std * sd
            )
        elif method in ("percentile", "mse"):
            if o.samples is None:
                raise RuntimeError(f"{type(self).__name__}: init {method!r} needs samples; set observer.keep_samples before observing")
            s = o.samples if self.signed else o.samples.clamp_min(0)
            if method == "percentile":
                m = ranges.percentile_abs(s, (0,), self.percentile)
            else:
                m = ranges.mse_bound(s, (0,), self.n_levels, self.signed, floor=not self.rounding)
        else:
            raise ValueError(f"unknown init method {method!r}")
        return m.reshape(1).float().clamp_min(ranges.MIN_BOUND)

    def init_clip(self, method: InitMethod | None = None, ema: bool = True) -> None:
        """Set the bounds with `method` (default: this module's ``init``); a fixed quantiser keeps its own."""
        if self.fixed:
            return
        self.set_bound(self.statistic_bound(method or self.init, ema=ema))

    # -- forward -----------------------------------------------------------------------------------
    def _float(self, x: Tensor) -> Tensor:
        if self.act_kind == "relu":
            return F.relu(x)
        if self.act_kind == "relu6":
            return F.relu6(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        if not self.started:
            y = self._float(x)
            if self.observing:
                self.observer.update(y)
            return y
        lo, hi = self.bounds()
        eps = ((hi - lo) / (self.n_levels - 1)).detach()
        q_lo, q_hi = self.int_range
        return PACTQuantFunc.apply(x, eps, lo, hi, q_lo, q_hi, self.rule)

    @property
    def rule(self) -> str:
        """``'half_up'`` with `rounding`, else ``'floor'``: the rule the integer network applies too."""
        return "half_up" if self.rounding else "floor"

    @torch.no_grad()
    def to_int(self, x: Tensor) -> Tensor:
        """The integer codes ``y/eps`` of the quantised output (an integer-valued float tensor)."""
        lo, hi = self.bounds()
        eps = (hi - lo) / (self.n_levels - 1)
        q_lo, q_hi = self.int_range
        return torch.round(PACTQuantFunc.apply(x, eps, lo, hi, q_lo, q_hi, self.rule) / eps)

    def extra_repr(self) -> str:
        lo, hi = self.bounds()
        return (
            f"n_levels={self.n_levels}, signed={self.signed}, init={self.init!r}, learn_clip={self.learn_clip}, "
            f"rounding={self.rounding}, act_kind={self.act_kind!r}, fixed={self.fixed}, "
            f"clip=[{lo.item():.6g}, {hi.item():.6g}]"
        )


class PACTUnsignedAct(_PACTActivation):
    """Unsigned PACT activation ``[0, hi]``, replacing ReLU / ReLU6 (QuantLib's PACTUnsignedAct).

    ``clip_lo`` is a zero buffer, ``clip_hi`` a parameter (learned by the STE when `learn_clip`).
    Output ``q*eps`` with ``q = clip(floor(x/eps), 0, n-1)`` (half up if `rounding`), ``eps = hi/(n-1)``.
    """

    signed = False
    clip_lo: Tensor  # buffer

    def __init__(self, n_levels: int = 256, init: InitMethod = "const", init_clip: float = 6.0, learn_clip: bool = True, **kwargs) -> None:
        super().__init__(n_levels, init, init_clip, learn_clip, **kwargs)
        self.register_buffer("clip_lo", torch.zeros(1))
        self.clip_hi = nn.Parameter(torch.tensor([float(init_clip)]), requires_grad=learn_clip)

    def bounds(self) -> tuple[Tensor, Tensor]:
        # a learned bound pushed to <= 0 would make eps <= 0: keep it positive
        return self.clip_lo, self.clip_hi.clamp_min(ranges.MIN_BOUND)

    def set_bound(self, magnitude: float | Tensor) -> None:
        with torch.no_grad():
            self.clip_hi.copy_(torch.as_tensor(magnitude, dtype=self.clip_hi.dtype).reshape(1))

    def clip_parameters(self) -> list[nn.Parameter]:
        return [self.clip_hi]


class PACTSignedAct(_PACTActivation):
    """Signed, almost-symmetric PACT activation (QuantLib's PACTAsymmetricAct with ``symm=True``).

    ``clip_lo`` (negative) is the parameter; ``clip_hi = -clip_lo*(n-2)/n`` is derived, so
    ``eps = -2*clip_lo/n`` and the codes are ``[-n/2, n/2-1]`` with zero point 0. Used for the network
    input and for quantisers inserted between back-to-back linear operations (``act_kind='identity'``).
    """

    signed = True

    def __init__(
        self,
        n_levels: int = 256,
        init: InitMethod = "const",
        init_clip: float = 1.0,
        learn_clip: bool = True,
        act_kind: ActKind = "identity",
        **kwargs,
    ) -> None:
        super().__init__(n_levels, init, init_clip, learn_clip, act_kind=act_kind, **kwargs)
        self.clip_lo = nn.Parameter(torch.tensor([-float(init_clip)]), requires_grad=learn_clip)

    @property
    def clip_hi(self) -> Tensor:
        """``-clip_lo*(n-2)/n`` (QuantLib's AlmostSymmQuantFunc), differentiable in ``clip_lo``."""
        return self.bounds()[1]

    def bounds(self) -> tuple[Tensor, Tensor]:
        lo = self.clip_lo.clamp_max(-ranges.MIN_BOUND)
        return lo, lo * (-(self.n_levels - 2) / self.n_levels)

    def set_bound(self, magnitude: float | Tensor) -> None:
        with torch.no_grad():
            self.clip_lo.copy_(-torch.as_tensor(magnitude, dtype=self.clip_lo.dtype).reshape(1))

    def clip_parameters(self) -> list[nn.Parameter]:
        return [self.clip_lo]


#: QuantLib's name for the signed activation quantiser.
PACTAsymmetricAct = PACTSignedAct


class PACTIntegerAdd(nn.Module):
    """A residual add with QuantLib's harmonisation (its PACTIntegerAdd): ``y = act_in(a) + act_in(b)``.

    Both inputs go through one signed quantiser ``act_in`` (one module, so one eps and one set of
    statistics over both inputs), so the sum of the two codes is exact on that grid: codes in
    ``[-n, n-2]``, real value ``eps * (q_a + q_b)``. The activation after the add (the block's ReLU)
    then requantises the sum. F2T: one RequantShift per input onto ``act_in``'s grid, an integer
    `Add`, and the following activation's RequantShift.
    """

    def __init__(self, act_in: PACTSignedAct) -> None:
        super().__init__()
        self.act_in = act_in

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.act_in(a) + self.act_in(b)


class PACTIntegerConcat(nn.Module):
    """A concatenation with QuantLib's harmonisation (its PACTIntegerConcat):
    ``y = cat([act_in(x) for x in xs], dim)``.

    Every input goes through one signed quantiser ``act_in``, so the concatenated codes share one
    eps. F2T: one RequantShift per input onto that grid, then an integer `Concat`.
    """

    def __init__(self, act_in: PACTSignedAct, dim: int) -> None:
        super().__init__()
        self.act_in = act_in
        self.dim = int(dim)

    def forward(self, *xs: Tensor) -> Tensor:
        return torch.cat([self.act_in(x) for x in xs], self.dim)


def input_quantiser(n_levels: int = 256, clip: float = 1.0, *, signed: bool = True, rounding: bool = False) -> _PACTActivation:
    """A fixed input quantiser: signed, bounds ``[-clip, clip*(n-2)/n]`` and ``eps_in = 2*clip/n``, or
    unsigned, bounds ``[0, clip]`` and ``eps_in = clip/(n-1)``; floor (or half up with `rounding`).

    With ``n = 256`` and ``clip = 1`` (``eps_in = 1/128``) and the 3DDFA input ``x = (p - 127.5)/128``
    of a uint8 pixel ``p``, the code is ``floor(x/eps_in) = floor(p - 127.5) = p - 128``: every
    pixel maps exactly, without clipping, to the int8 ``p - 128`` (``p XOR 0x80``), and the
    fake-quantised input is ``(p - 128)/128 = x - 1/256``. Rounding would instead send the half-integer
    ``p - 127.5`` half-to-even, merging pixel pairs (127 and 128 both to 0) and clipping 255.
    `qlspec.preprocess.input_grid` derives sign, clip and rule from the spec's normalisation.
    The bounds are not learned nor calibrated (``fixed``).
    """
    cls = PACTSignedAct if signed else PACTUnsignedAct
    q = cls(n_levels=n_levels, init="const", init_clip=clip, learn_clip=False, rounding=rounding, act_kind="identity")
    q.fixed = True
    q.observing = False
    return q


# --------------------------------------------------------------------------------------------------
# weights


class _PACTLinearOp(_Module):
    """Weight quantisation shared by `PACTConv2d` and `PACTLinear` (QuantLib's ``_PACTLinOp``, symmetric).

    ``clip_lo`` has shape ``(C_out,1,...)`` per channel or ``(1,1,...)`` per layer; ``clip_hi =
    -clip_lo*(n-2)/n`` (almost symmetric), ``eps_w = (clip_hi - clip_lo)/(n-1) = -2*clip_lo/n``,
    ``weight_q = clip(round(w/eps_w), -n/2, n/2-1) * eps_w`` (round half to even, as QuantLib).

    Unless `learn_clip`, the bounds are recomputed from the current weights with ``init`` at every
    use until ``frozen`` (QuantLab recomputes them before every batch; we do it on every access, so
    the bounds read by F2T always match the final weights). Biases stay float in the fake-quantised
    forward (as QuantLib); F2T quantises them with ``get_bias_int(eps_in)``.
    """

    weight: Tensor
    started: Tensor  # buffer
    frozen: Tensor  # buffer

    if TYPE_CHECKING:
        # read-only here: Conv2d's bias is a Tensor or None, Linear's a Parameter (None at run time without one)
        @property
        def bias(self) -> Tensor | None: ...

    def _setup_quant(
        self,
        n_levels: int = 256,
        granularity: Literal["per-channel", "per-layer"] = "per-channel",
        init: InitMethod = "max",
        learn_clip: bool = False,
        init_clip: float = 1.0,
        nb_std: float = 3.0,
        percentile: float = 99.9,
    ) -> None:
        _check_levels(n_levels)
        if granularity not in ("per-channel", "per-layer"):
            raise ValueError(f"granularity must be 'per-channel' or 'per-layer', got {granularity!r}")
        self.n_levels = n_levels
        self.granularity = granularity
        self.init = init
        self.init_value = float(init_clip)
        self.learn_clip = learn_clip
        self.nb_std = nb_std
        self.percentile = percentile
        self.signed = True
        w = self.weight
        shape = (w.shape[0],) + (1,) * (w.dim() - 1) if granularity == "per-channel" else (1,) * w.dim()
        self.clip_lo = nn.Parameter(torch.full(shape, -float(init_clip)), requires_grad=learn_clip)
        self.register_buffer("started", torch.tensor(False))
        self.register_buffer("frozen", torch.tensor(False))

    @property
    def int_range(self) -> tuple[int, int]:
        """``(-n/2, n/2-1)``."""
        return -(self.n_levels // 2), self.n_levels // 2 - 1

    @property
    def reduce_dims(self) -> tuple[int, ...]:
        """Dimensions of the weight one bound covers."""
        d = self.weight.dim()
        return tuple(range(1, d)) if self.granularity == "per-channel" else tuple(range(d))

    def weight_bound(self, method: InitMethod | None = None) -> Tensor:
        """The bound magnitude `method` (default ``init``) gives for the current weights, ``clip_lo``'s shape."""
        method = method or self.init
        w, dims = self.weight.detach(), self.reduce_dims
        if method == "max":
            return ranges.max_abs(w, dims)
        if method == "std":
            return ranges.std_bound(w, dims, self.nb_std)
        if method == "const":
            return torch.full_like(self.clip_lo, self.init_value)
        if method == "percentile":
            return ranges.percentile_abs(w, dims, self.percentile)
        if method == "mse":
            return ranges.mse_bound(w, dims, self.n_levels, signed=True, floor=False)
        raise ValueError(f"unknown weight init method {method!r}")

    @torch.no_grad()
    def init_clip(self, method: InitMethod | None = None) -> None:
        """Set ``clip_lo = -bound`` from the current weights with `method` (default ``init``)."""
        self.clip_lo.copy_(-self.weight_bound(method).to(self.clip_lo.dtype))

    def bounds(self) -> tuple[Tensor, Tensor]:
        """``(clip_lo, clip_hi)`` as used now (refreshed from the weights unless learned or frozen)."""
        if not self.learn_clip and not bool(self.frozen):
            self.init_clip()
        lo = self.clip_lo.clamp_max(-ranges.MIN_BOUND)
        return lo, lo * (-(self.n_levels - 2) / self.n_levels)

    @property
    def clip_hi(self) -> Tensor:
        return self.bounds()[1]

    def get_eps_w(self) -> Tensor:
        """``eps_w = (clip_hi - clip_lo)/(n-1)``, ``clip_lo``'s shape, detached."""
        lo, hi = self.bounds()
        return ((hi - lo) / (self.n_levels - 1)).detach().clone()

    @property
    def weight_q(self) -> Tensor:
        """The fake-quantised weight (differentiable by the STE)."""
        lo, hi = self.bounds()
        eps = ((hi - lo) / (self.n_levels - 1)).detach()
        q_lo, q_hi = self.int_range
        return PACTQuantFunc.apply(self.weight, eps, lo, hi, q_lo, q_hi, "half_even")

    @property
    def weight_int(self) -> Tensor:
        """``round(weight_q/eps_w)``: integers in ``[-n/2, n/2-1]`` (float tensor)."""
        with torch.no_grad():
            return torch.round(self.weight_q / self.get_eps_w())

    def get_eps_out(self, eps_in: Tensor | float) -> Tensor:
        """Accumulator eps ``eps_w*eps_in``: shape ``(C_out,)`` per channel, ``(1,)`` per layer."""
        return self.get_eps_w().reshape(-1) * torch.as_tensor(eps_in).reshape(-1)

    def get_bias_int(self, eps_in: Tensor | float) -> Tensor | None:
        """``round(bias/eps_out)`` (float64, not clipped: F2T checks that it fits), or None without bias.
        QuantLib clips at +-2**16 eps_out; we do not."""
        if self.bias is None:
            return None
        with torch.no_grad():
            return torch.round(self.bias.double() / self.get_eps_out(eps_in).double())

    def clip_parameters(self) -> list[nn.Parameter]:
        return [self.clip_lo]

    def quant_repr(self) -> str:
        return (
            f", n_levels={self.n_levels}, granularity={self.granularity!r}, init={self.init!r}, "
            f"learn_clip={self.learn_clip}, started={bool(self.started)}, frozen={bool(self.frozen)}"
        )


class PACTConv2d(nn.Conv2d, _PACTLinearOp):
    """`nn.Conv2d` whose weight is fake-quantised (symmetric, rounded) once ``started``; see `_PACTLinearOp`."""

    def __init__(self, *args, quant: dict | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._setup_quant(**(quant or {}))

    @classmethod
    def from_float(cls, conv: nn.Conv2d, **quant) -> PACTConv2d:
        """A copy of `conv` (same geometry, weights and bias) with the given quantiser settings."""
        new = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
            quant=quant,
        )
        with torch.no_grad():
            new.weight.copy_(conv.weight)
            if conv.bias is not None:
                assert new.bias is not None  # made with bias=True
                new.bias.copy_(conv.bias)
        new.train(conv.training)
        return new

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight_q if self.started else self.weight, self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + self.quant_repr()


class PACTLinear(nn.Linear, _PACTLinearOp):
    """`nn.Linear` whose weight is fake-quantised (symmetric, rounded) once ``started``; see `_PACTLinearOp`."""

    def __init__(self, *args, quant: dict | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._setup_quant(**(quant or {}))

    @classmethod
    def from_float(cls, lin: nn.Linear, **quant) -> PACTLinear:
        """A copy of `lin` (weights and bias) with the given quantiser settings."""
        new = cls(
            lin.in_features, lin.out_features, bias=lin.bias is not None, device=lin.weight.device, dtype=lin.weight.dtype, quant=quant
        )
        with torch.no_grad():
            new.weight.copy_(lin.weight)
            if lin.bias is not None:
                new.bias.copy_(lin.bias)
        new.train(lin.training)
        return new

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_q if self.started else self.weight, self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + self.quant_repr()


#: Every fake-quantisation module type (F2T and tracers treat them as leaves).
PACT_ACTIVATIONS = (PACTUnsignedAct, PACTSignedAct)
PACT_LINEAR_OPS = (PACTConv2d, PACTLinear)
PACT_MODULES = PACT_ACTIVATIONS + PACT_LINEAR_OPS


def pact_modules(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every PACT module in `net`, in registration order."""
    return [(n, m) for n, m in net.named_modules() if isinstance(m, PACT_MODULES)]
