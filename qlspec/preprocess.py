"""From stored images to the network input, and the input quantiser that follows from it.

The data stage stores uint8 images ``(N, H, W, 3)`` in BGR order (3DDFA's). The spec's ``preprocess``
says what the network sees: ``channel_order`` (BGR as stored, or RGB) and ``normalise``
(``x = (p - mean) / std`` per channel, in float32). Training, QAT, evaluation, F2T, the convert stage
(and next the C++ pre-processing) all go through `InputTransform`, so changing either field changes
every stage from ``train`` on, as `qlspec diff` says.

The input quantiser is derived, not configured: eps = 1/std, so a pixel step is one code, and
``x / eps = p - mean`` up to float32 rounding. Of the two rules PACT knows, the one whose decision
points lie farthest from the 256 values ``p - mean`` is taken: floor when they are half-integers
(3DDFA's mean 127.5: ``floor(p - 127.5) = p - 128``, rounding would merge pixels 127 and 128), round
when they are integers (mean 0 or 128, where flooring would depend on float32's last bit). The
codes must be 256 distinct values in a signed ``[-128, 127]`` or unsigned ``[0, 255]`` 8-bit range;
`input_grid` checks that in float32, exactly as the quantiser computes, and says what to change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PIXELS = np.arange(256, dtype=np.float32)


@dataclass(frozen=True)
class InputGrid:
    """The input quantiser: ``q = clip(rounding(x / eps), lo, hi)`` with x the normalised pixel."""

    eps: float  # a float32 value
    signed: bool
    rounding: str  # "floor" or "half_up" (the IR's `Quantise` rules)
    lo: int
    hi: int
    clip: float  # PACT's fixed bound giving this eps: -lower bound signed (128/std), upper bound unsigned (255/std)


def _eps(std: float, signed: bool) -> np.float32:
    """eps as the fixed PACT quantiser computes it from its float32 bound (``2*clip/n`` signed,
    ``clip/(n-1)`` unsigned), for eps = 1/std."""
    if signed:
        return np.float32(np.float32(2) * np.float32(128 / std) / np.float32(256))
    return np.float32(np.float32(255 / std) / np.float32(255))


def input_grid(mean: float, std: float) -> InputGrid:
    """The input quantiser for ``x = (p - mean) / std`` (module docstring); ValueError if 8 bits cannot
    hold the 256 pixel values one-to-one."""
    if not (np.isfinite(mean) and np.isfinite(std) and std > 0):
        raise ValueError(f"normalise needs a finite mean and a finite std > 0 (got mean {mean}, std {std})")
    frac = abs((mean % 1) - 0.5)  # 0: half-integers p - mean, 0.5: integers
    rounding = "floor" if frac < 0.25 else "half_up"
    x = (PIXELS - np.float32(mean)) / np.float32(std)
    for signed in (False, True):
        eps = _eps(std, signed)
        v = x / eps
        q = np.floor(v) if rounding == "floor" else np.floor(v + np.float32(0.5))
        lo, hi = (-128, 127) if signed else (0, 255)
        if q.min() >= lo and q.max() <= hi and len(np.unique(q)) == 256:
            return InputGrid(float(eps), signed, rounding, lo, hi, (128 if signed else 255) / std)
    raise ValueError(f"with mean {mean} and std {std}, pixels 0..255 do not map one-to-one onto 8-bit input codes "
                     "(eps = 1/std): use mean 0 (unsigned) or a mean in [127.5, 128] (signed)")


@dataclass(frozen=True)
class InputTransform:
    """uint8 images ``(N, H, W, 3)`` in stored (BGR) order -> float32 ``(N, 3, H, W)``: the channel
    order the network wants, then ``(p - mean) / std`` in float32."""

    mean: float = 127.5
    std: float = 128.0
    rgb: bool = False

    @classmethod
    def from_spec(cls, preprocess) -> InputTransform:
        return cls(float(preprocess.normalise.mean), float(preprocess.normalise.std), preprocess.channel_order == "RGB")

    @property
    def grid(self) -> InputGrid:
        return input_grid(self.mean, self.std)

    def __call__(self, images):
        import torch

        x = torch.as_tensor(images)
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected uint8 (N, H, W, 3) images, got {x.dtype} {tuple(x.shape)}")
        if self.rgb:
            x = x.flip(-1)
        return (x.permute(0, 3, 1, 2).to(torch.float32) - self.mean) / self.std


#: 3DDFA's own input: BGR, (p - 127.5) / 128.
DEFAULT = InputTransform()
