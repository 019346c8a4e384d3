"""`QuantConfig`: every knob of float-to-fake conversion, as plain values.

The `quantise` stage builds one of these from the spec's `quantisation` section and hands it to
`float_to_fake`. Bounds are in the units of the tensor they clip (activation units for activations,
weight units for weights); bit-widths are bits per value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

WeightInit = Literal["max", "std", "const", "percentile", "mse"]
ActInit = Literal["max", "std", "const", "percentile", "mse"]
Granularity = Literal["per-channel", "per-layer"]

_WEIGHT_INITS = ("max", "std", "const", "percentile", "mse")
_ACT_INITS = ("max", "std", "const", "percentile", "mse")


@dataclass(frozen=True)
class QuantConfig:
    """How `float_to_fake` quantises a network (QuantLib PACT semantics; see `qlspec.quant.pact`).

    Attributes:
        weight_bits: bits per weight; ``n_levels = 2**weight_bits``, integer range
            ``[-n/2, n/2-1]`` (weights are symmetric, zero point 0, rounded half to even).
        act_bits: bits per activation; unsigned activations (ReLU/ReLU6 replacements and pooling
            outputs) take ``[0, n-1]``, signed ones ``[-n/2, n/2-1]``.
        input_bits: bits of the network-input quantiser (signed).
        weight_granularity: ``'per-channel'``: one clipping bound (and eps) per output channel,
            shape ``(C_out,1,1,1)`` for convolutions and ``(C_out,1)`` for linears;
            ``'per-layer'``: one per layer, shape ``(1,1,1,1)`` / ``(1,1)``.
        weight_init: how weight bounds are set: ``'max'`` (max |w|), ``'std'`` (|mean| +
            ``nb_std`` * std), ``'const'`` (``weight_clip``), ``'percentile'`` (``percentile``-th
            percentile of |w|), ``'mse'`` (bound minimising the weights' squared quantisation error).
            With ``weight_learn_clip`` false (QuantLab's choice) the bounds are recomputed from the
            current weights at every use, so they track training.
        weight_learn_clip: learn the weight bound by backprop (PACT STE) instead of recomputing it.
        weight_clip: bound for ``weight_init='const'``, weight units.
        act_init: how activation bounds are set when quantisation starts: ``'max'`` (running max,
            an EMA of per-batch maxima with beta 0.9 as in QuantLib), ``'std'`` (mean + ``nb_std``
            * std), ``'const'`` (``act_clip``), ``'percentile'``, ``'mse'``. All but ``'const'``
            need statistics: the quantisers record them while they run in float mode.
        act_clip: bound for ``act_init='const'`` (activation units): the upper bound of unsigned
            quantisers, the magnitude of the lower bound of signed ones.
        act_learn_clip: learn activation bounds by backprop (PACT). QuantLib's unsigned
            activations with its default ``symm=True`` do not actually learn; we do, as PACT does.
        act_rounding: round activations to the nearest level instead of flooring them.
            QuantLib's default (and ours) is flooring; F2T folds rounding into the requant ``add``.
        percentile: percentile for ``'percentile'`` init, in %, e.g. 99.9.
        nb_std: number of standard deviations for ``'std'`` init.
        input_clip: the network-input quantiser's fixed lower-bound magnitude, input units:
            bounds ``[-input_clip, input_clip*(n-2)/n]``, ``eps_in = 2*input_clip/n``. The default
            1.0 with 8 bits gives ``eps_in = 1/128``, which maps 3DDFA's ``(pixel-127.5)/128``
            exactly onto ``pixel - 128`` (see `qlspec.quant.f2f`). ``None``: the input quantiser is
            initialised and learned like any signed activation.
        input_signed, input_rounding: the fixed input quantiser's sign (unsigned: bounds
            ``[0, input_clip]``, ``eps_in = input_clip/(n-1)``) and rule (round instead of floor);
            `qlspec.preprocess.input_grid` derives them, with ``input_clip``, from the normalisation.
        quantise_pool_output: put an activation quantiser after each average pooling so that its
            output is back on an 8-bit grid (F2T: sum, then requantise).
        fold_bn: fold BatchNorm into the preceding convolution before quantising (for PTQ). PACT
            QAT keeps BN: F2T folds it into the requantisation.
    """

    weight_bits: int = 8
    act_bits: int = 8
    input_bits: int = 8
    weight_granularity: Granularity = "per-channel"
    weight_init: WeightInit = "max"
    weight_learn_clip: bool = False
    weight_clip: float = 1.0
    act_init: ActInit = "const"
    act_clip: float = 6.0
    act_learn_clip: bool = True
    act_rounding: bool = False
    percentile: float = 99.9
    nb_std: float = 3.0
    input_clip: float | None = 1.0
    input_signed: bool = True
    input_rounding: bool = False
    quantise_pool_output: bool = True
    fold_bn: bool = False

    def __post_init__(self) -> None:
        for name in ("weight_bits", "act_bits", "input_bits"):
            bits = getattr(self, name)
            if not isinstance(bits, int) or not 2 <= bits <= 16:
                raise ValueError(f"{name}: must be an integer in 2..16 (got {bits!r})")
        if self.weight_granularity not in ("per-channel", "per-layer"):
            raise ValueError(f"weight_granularity: must be 'per-channel' or 'per-layer' (got {self.weight_granularity!r})")
        if self.weight_init not in _WEIGHT_INITS:
            raise ValueError(f"weight_init: must be one of {', '.join(_WEIGHT_INITS)} (got {self.weight_init!r})")
        if self.act_init not in _ACT_INITS:
            raise ValueError(f"act_init: must be one of {', '.join(_ACT_INITS)} (got {self.act_init!r})")
        for name in ("weight_clip", "act_clip", "nb_std"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0 (got {getattr(self, name)!r})")
        if self.input_clip is not None and not self.input_clip > 0:
            raise ValueError(f"input_clip: must be > 0 or None (got {self.input_clip!r})")
        if not 50 < self.percentile <= 100:
            raise ValueError(f"percentile: must be in (50, 100] (got {self.percentile!r})")

    @property
    def weight_levels(self) -> int:
        """Number of weight quantisation levels, ``2**weight_bits``."""
        return 2**self.weight_bits

    @property
    def act_levels(self) -> int:
        """Number of activation quantisation levels, ``2**act_bits``."""
        return 2**self.act_bits

    @property
    def input_levels(self) -> int:
        """Number of input quantisation levels, ``2**input_bits``."""
        return 2**self.input_bits
