"""Requantiser constants for int32 kernels: each RequantShift's D, `mul` and `add`, and their headroom.

A requantiser takes an integer accumulator ``a`` whose real value is ``scale*a + offset`` (per output
channel) onto a grid ``eps_out``: ``q = clip(floor((a*mul + add + div/2) / div), lo, hi)``, ``div = 2**D``,

    mul = round(scale/eps_out * 2**D)
    add = round(offset/eps_out * 2**D) - (2**(D-1) if the rule is floor else 0)

so ``q = floor(real/eps_out)`` (PACT's activations and the floor input rule) or ``floor(real/eps_out + 1/2)``
(rounding: half up), up to the constants' rounding, which moves ``real/eps_out`` by at most
``(|a|/2 + 1/2) / 2**D`` (``mul`` and ``add`` each within 1/2 of their exact values): one rule for FQ
and TQ alike, with no tolerance.

Deeploy's kernels compute ``t = a*mul + add`` and then ``(t + div/2) >> D`` in int32 (DORY's backends
likewise), so both ``a*mul + add`` and ``a*mul + add + div/2`` must stay inside int32. `peak` is the
larger of their magnitudes over an accumulator range; `choose_shift` takes the largest D in 1..31 whose
peak stays within ``2**31 / headroom`` (headroom 2: one spare bit), which keeps ``mul`` as precise as
int32 allows. QuantLab stores the constants as float32, so each is then rounded to the nearest
integer float32 holds (`fit_float32`; nothing moves below 2**24).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from qlspec.errors import ExportError

INT32_MAX = 2**31 - 1
MAX_SHIFT = 31  # div/2 = 2**30 is the largest half that int32 holds with a spare bit


def fit_float32(v: np.ndarray, *, half: int = 0, k: int = 1) -> np.ndarray:
    """Integers `v` rounded (each to a multiple of a power of two g, as little as possible) so that
    ``v*k`` and ``v*k - half`` are exactly representable in float32; raises if `half` is not a
    multiple of the g needed. Values below 2**24 are returned unchanged."""
    v = np.asarray(v, np.int64)
    m = np.abs(v).astype(np.float64) * k + half
    e = np.frexp(m)[1]  # m < 2**e
    g = (2 ** np.maximum(0, e - 24)).astype(np.int64)
    out = np.asarray(np.floor_divide(v + g // 2, g) * g, np.int64)
    if half and (half % g.max(initial=1)):
        raise ExportError(
            f"requantisation constant {int(np.abs(v).max())} is too large for float32 with div/2 = {half}; use more requant_bits",
            where="export",
        )
    for w in (out * k, out * k - half):
        if not np.array_equal(w.astype(np.float32).astype(np.int64), w):
            raise ExportError(f"requantisation constant {int(np.abs(v).max())} cannot be stored exactly in float32", where="export")
    return out


def constants(ratio: np.ndarray, bias: np.ndarray, shift: int, *, rounding: bool, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(mul, add)`` (int64, broadcast to one shape) for ``real/eps_out = ratio*a + bias``, D = `shift`.

    `ratio` = scale/eps_out, `bias` = offset/eps_out (per channel or scalar); `rounding`: half up
    instead of floor; `k`: a pool's window size, by which the exported files multiply `mul`. Both are
    rounded to float32-exact integers (`fit_float32`). Raises `ExportError` when a value exceeds int64."""
    div = 2**shift
    mul, add = np.broadcast_arrays(np.round(np.asarray(ratio, np.float64) * div), np.round(np.asarray(bias, np.float64) * div))
    if max(np.abs(mul).max(initial=0), np.abs(add).max(initial=0)) >= 2.0**62:
        raise ExportError(f"requantisation constants beyond int64 at D = {shift}", where="export")
    mul = fit_float32(mul.astype(np.int64), k=k)
    # DORY's files hold add + div/2 and Deeploy's add: both must be float32-exact
    dory_add = fit_float32(add.astype(np.int64) + (div // 2 if rounding else 0), half=div // 2)
    return mul, dory_add - div // 2


def peak(mul: np.ndarray, add: np.ndarray, shift: int, a_lo: np.ndarray, a_hi: np.ndarray) -> int:
    """max |a*mul + add| and |a*mul + add + div/2| over ``a_lo <= a <= a_hi`` (per channel, broadcast
    like `mul`): what an int32 kernel must hold. Exact (Python integers)."""
    mul, add, a_lo, a_hi = (np.asarray(v, np.int64) for v in (mul, add, a_lo, a_hi))
    mul, add, a_lo, a_hi = np.broadcast_arrays(mul, add, a_lo, a_hi)
    half = 2 ** (shift - 1) if shift else 0
    best = 0
    for m, c, lo, hi in zip(mul.reshape(-1).tolist(), add.reshape(-1).tolist(), a_lo.reshape(-1).tolist(), a_hi.reshape(-1).tolist()):
        for a in (lo, hi):  # a*mul + add is monotonic in a: its extremes sit at the ends
            t = a * m + c
            best = max(best, abs(t), abs(t + half))
    return best


def choose_shift(
    ratio: np.ndarray, bias: np.ndarray, a_lo: np.ndarray, a_hi: np.ndarray, *, rounding: bool, k: int = 1, headroom: float = 2.0
) -> int:
    """The largest D in 1..31 whose constants keep `peak` within ``2**31 / headroom`` over
    ``[a_lo, a_hi]``; raises `ExportError` when not even D = 1 does."""
    limit = 2**31 / headroom
    for shift in range(MAX_SHIFT, 0, -1):
        mul, add = constants(ratio, bias, shift, rounding=rounding, k=k)
        if peak(mul, add, shift, a_lo, a_hi) <= limit:
            return shift
    raise ExportError(
        f"no requantisation divisor keeps x*mul + add within 2**31/{headroom:g}: the bias reaches "
        f"{float(np.abs(bias).max()):.4g} output levels",
        where="export",
    )


def significant_bits(mul: np.ndarray) -> tuple[int, int]:
    """(fewest, most) bits of ``|mul|`` over the channels: the multiplier's precision."""
    bits = [int(abs(m)).bit_length() for m in np.asarray(mul, np.int64).reshape(-1).tolist()]
    return min(bits), max(bits)


@dataclass(frozen=True)
class RequantFit:
    """How one requantiser sits in int32: D, its multiplier's precision and its headroom.

    `observed_peak`: `peak` over the accumulator values seen on the fitting data (None without
    data); `worst_peak`: over every value the accumulator can take (sum of |w| times the largest
    input code, per channel). Headroom = ``2**31 / peak``: 2 or more leaves a spare bit; below 1 an
    int32 kernel overflows."""

    name: str
    source: str
    shift: int
    mul_bits: tuple[int, int]
    observed_peak: int | None
    worst_peak: int

    @property
    def observed_headroom(self) -> float | None:
        return None if self.observed_peak is None else 2**31 / max(self.observed_peak, 1)

    @property
    def worst_headroom(self) -> float:
        return 2**31 / max(self.worst_peak, 1)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "D": self.shift,
            "mul_bits": list(self.mul_bits),
            "observed_peak": self.observed_peak,
            "observed_headroom": self.observed_headroom,
            "worst_peak": self.worst_peak,
            "worst_headroom": self.worst_headroom,
            "worst_fits_int32": self.worst_peak <= INT32_MAX,
        }


def table_markdown(fits: list[RequantFit], agreement: Mapping[str, Sequence[int]] | None = None) -> str:
    """The per-requantiser table: D, multiplier bits, observed and worst-case headroom, and with
    `agreement` (name -> ``[values, mismatches]`` of the int32 cross-check) how many of its values
    Deeploy's int32 kernel computes differently from the reference engine."""
    agreement = agreement or {}
    lines = [
        "| requantiser | source | D | mul bits | observed headroom | worst-case headroom | int32 kernel differs |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in fits:
        lo, hi = f.mul_bits
        obs = "-" if f.observed_headroom is None else f"{f.observed_headroom:.2f}x"
        worst = f"{f.worst_headroom:.3g}x" + ("" if f.worst_peak <= INT32_MAX else " (can overflow)")
        values, bad = agreement.get(f.name, (0, 0))
        differs = f"{bad:,} of {values:,}" if values else "-"
        lines.append(f"| {f.name} | {f.source} | {f.shift} | {lo}-{hi} | {obs} | {worst} | {differs} |")
    return "\n".join(lines) + "\n"
