"""The int32 cross-check: every requantiser of a graph recomputed as Deeploy's int32 C kernel does it.

Deeploy's generic kernel (``RequantShift_s8.c``; its template sets ``rounding = 1``) computes, in
``int32_t``::

    t = x * mul[c] + add[c];
    t = (t + (1 << (log2D - 1))) >> log2D;
    y = CLAMP(t, lo, hi);

`deeploy_requant` is that arithmetic in numpy int32, where a product or sum beyond int32 wraps
around as it does on the board, written without the reference engine's code. `cross_check` runs a
graph through the reference engine (int64, overflow is an error) and feeds every RequantShift's own
input to `deeploy_requant`: a mismatch is an int32 overflow (or a bug in one of the two). It also
measures each requantiser's exact peak ``max |x*mul + add|, |x*mul + add + div/2|`` on the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qlspec.engine.run import run_graph
from qlspec.graph.ir import Graph, Node


def deeploy_requant(x: np.ndarray, mul: np.ndarray, add: np.ndarray, log2d: int, lo: int, hi: int) -> np.ndarray:
    """Deeploy's int32 RequantShift kernel (module docstring): wrap-around int32 arithmetic."""
    x32, mul32, add32 = (np.asarray(v).astype(np.int32) for v in (x, mul, add))
    with np.errstate(over="ignore"):
        t = x32 * mul32 + add32  # int32 (wraps, as the C kernel's int32_t does)
        t = t + np.int32(1 << (log2d - 1)) if log2d else t
    t = t >> np.int32(log2d)
    return np.clip(t, lo, hi).astype(np.int64)


@dataclass
class Int32Report:
    """What `cross_check` found: values compared, how many differ from the engine, and per
    requantiser the exact peak (``2**31 / peak`` is its headroom on this data) and its own
    ``[values, mismatches]``."""

    values: int = 0
    mismatches: int = 0
    peaks: dict[str, int] = field(default_factory=dict)
    agreement: dict[str, list[int]] = field(default_factory=dict)

    @property
    def min_headroom(self) -> float:
        return min((2**31 / max(p, 1) for p in self.peaks.values()), default=float("inf"))

    def as_dict(self) -> dict:
        return {
            "requantisers": len(self.peaks),
            "values": self.values,
            "mismatches": self.mismatches,
            "min_headroom": self.min_headroom,
            "peaks": dict(self.peaks),
        }


def cross_check(g: Graph, inputs: dict[str, np.ndarray], output: str, report: Int32Report | None = None) -> tuple[np.ndarray, Int32Report]:
    """Run `g` on `inputs` with the reference engine; recompute every RequantShift with
    `deeploy_requant` on the node's own input. Returns the graph's `output` and the (updated) report."""
    report = report or Int32Report()

    def check(node: Node, args, y: np.ndarray) -> None:
        if node.op != "RequantShift":
            return
        x, mul, add = args
        shift = int(node.attr("div")).bit_length() - 1
        got = deeploy_requant(x, mul, add, shift, int(node.attr("lo")), int(node.attr("hi")))
        bad = int((got != y).sum())
        report.values += int(y.size)
        report.mismatches += bad
        counts = report.agreement.setdefault(node.name, [0, 0])
        counts[0] += int(y.size)
        counts[1] += bad
        t = np.multiply(x, mul.astype(np.int64), dtype=np.int64) + add.astype(np.int64)
        half = (1 << (shift - 1)) if shift else 0
        peak = max(int(np.abs(t).max(initial=0)), int(np.abs(t + half).max(initial=0)))
        report.peaks[node.name] = max(report.peaks.get(node.name, 0), peak)

    out = run_graph(g, inputs, observe=check)[output]
    return np.asarray(out).astype(np.int64), report
