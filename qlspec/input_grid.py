"""The input quantiser that follows from the spec's normalisation, computed without numpy.

eps = 1/std, so a pixel step is one code, and ``x / eps = p - mean`` up to float32 rounding. Of the
two rules PACT knows, the one whose decision points lie farthest from the 256 values ``p - mean`` is
taken: floor when they are half-integers (3DDFA's mean 127.5: ``floor(p - 127.5) = p - 128``,
rounding would merge pixels 127 and 128), round when they are integers (mean 0 or 128, where
flooring would depend on float32's last bit). The codes must be 256 distinct values in a signed
``[-128, 127]`` or unsigned ``[0, 255]`` 8-bit range; `input_grid` checks that in float32, exactly
as the quantiser computes, and says what to change.

Every float32 operation is a Python float operation rounded to float32 (`f32`): for +, -, * and /
of float32 operands, rounding the double result to float32 gives the correctly rounded float32
result (53 >= 2*24 + 2 bits), so this equals numpy's float32 arithmetic bit for bit. It is pure
Python because spec validation runs it, and `plan`, `diff` and `validate` do not import numpy.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass


def f32(x: float) -> float:
    """`x` rounded to the nearest float32 (to nearest even; +-inf beyond float32's range)."""
    return array("f", (x,))[0]


@dataclass(frozen=True)
class InputGrid:
    """The input quantiser: ``q = clip(rounding(x / eps), lo, hi)`` with x the normalised pixel."""

    eps: float  # a float32 value
    signed: bool
    rounding: str  # "floor" or "half_up" (the IR's `Quantise` rules)
    lo: int
    hi: int
    clip: float  # PACT's fixed bound giving this eps: -lower bound signed (128/std), upper bound unsigned (255/std)


def quantiser_eps(std: float, signed: bool) -> float:
    """eps as the fixed PACT quantiser computes it from its float32 bound (``2*clip/n`` signed,
    ``clip/(n-1)`` unsigned), for eps = 1/std: a float32 value."""
    if signed:
        return f32(f32(2.0 * f32(128 / std)) / 256.0)
    return f32(f32(255 / std) / 255.0)


def input_grid(mean: float, std: float) -> InputGrid:
    """The input quantiser for ``x = (p - mean) / std`` (module docstring); ValueError if 8 bits cannot
    hold the 256 pixel values one-to-one."""
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise ValueError(f"normalise needs a finite mean and a finite std > 0 (got mean {mean}, std {std})")
    frac = abs((mean % 1) - 0.5)  # 0: half-integers p - mean, 0.5: integers
    rounding = "floor" if frac < 0.25 else "half_up"
    m, s = f32(mean), f32(std)
    x = [f32(f32(p - m) / s) for p in range(256)]
    for signed in (False, True):
        eps = quantiser_eps(std, signed)
        v = [f32(xi / eps) if eps else math.inf for xi in x]
        if not all(math.isfinite(vi) for vi in v):
            continue
        q = [math.floor(vi) if rounding == "floor" else math.floor(f32(vi + 0.5)) for vi in v]
        lo, hi = (-128, 127) if signed else (0, 255)
        if min(q) >= lo and max(q) <= hi and len(set(q)) == 256:
            return InputGrid(eps, signed, rounding, lo, hi, (128 if signed else 255) / std)
    raise ValueError(
        f"with mean {mean} and std {std}, pixels 0..255 do not map one-to-one onto 8-bit input codes "
        "(eps = 1/std): use mean 0 (unsigned) or a mean in [127.5, 128] (signed)"
    )
