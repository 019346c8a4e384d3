"""Static activation memory plan: every activation gets an offset in one arena, and tensors whose
lifetimes do not overlap share bytes.

Lifetimes are in node steps of the topological order: a tensor lives from the step that defines
it (graph inputs: before step 0) to its last reader (graph outputs: to the end). Placement is
greedy by size (largest first, lowest offset that overlaps no placed tensor alive at the same
time), the "greedy by size" planner of TFLite. With `align`, every size is rounded up to a multiple
of it, so every offset is aligned too (what generated C++ needs for vector loads).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from qlspec.graph.ir import Graph


@dataclass(frozen=True)
class MemoryPlan:
    offsets: Mapping[str, int]  # tensor -> byte offset in the arena
    sizes: Mapping[str, int]  # tensor -> bytes
    lifetimes: Mapping[str, tuple[int, int]]
    naive_bytes: int  # every activation in its own buffer
    arena_bytes: int  # with buffer reuse (this plan)
    peak_live_bytes: int  # lower bound: most bytes alive at one step

    def check(self) -> None:
        """Raise ValueError if two tensors alive at one step share a byte."""
        items = list(self.offsets)
        for i, a in enumerate(items):
            for b in items[i + 1 :]:
                (s1, e1), (s2, e2) = self.lifetimes[a], self.lifetimes[b]
                if s1 <= e2 and s2 <= e1:
                    o1, o2 = self.offsets[a], self.offsets[b]
                    if o1 < o2 + self.sizes[b] and o2 < o1 + self.sizes[a]:
                        raise ValueError(f"{a} and {b} overlap in the memory plan")


def plan_memory(g: Graph, align: int = 1) -> MemoryPlan:
    end = len(g.nodes)
    life: dict[str, list[int]] = {t: [-1, -1] for t in g.inputs}
    for i, n in enumerate(g.nodes):
        for t in n.outputs:
            life[t] = [i, i]
        for t in n.inputs:
            if t in life:
                life[t][1] = i
    for t in g.outputs:
        if t in life:
            life[t][1] = end
    sizes = {t: -(-g.tensors[t].nbytes // align) * align for t in life}
    lifetimes = {t: (s, e) for t, (s, e) in life.items()}
    placed: list[tuple[int, int, int, int]] = []  # (offset, size, start, end)
    offsets: dict[str, int] = {}
    for t in sorted(life, key=lambda t: (-sizes[t], lifetimes[t])):
        s, e = lifetimes[t]
        busy = sorted((o, o + sz) for o, sz, s2, e2 in placed if s <= e2 and s2 <= e)
        offset = 0
        for lo, hi in busy:
            if offset + sizes[t] <= lo:
                break
            offset = max(offset, hi)
        offsets[t] = offset
        placed.append((offset, sizes[t], s, e))
    arena = max((o + sz for o, sz, _, _ in placed), default=0)
    peak = max((sum(sizes[t] for t, (s, e) in lifetimes.items() if s <= step <= e) for step in range(-1, end + 1)), default=0)
    return MemoryPlan(MappingProxyType(offsets), MappingProxyType(sizes), MappingProxyType(lifetimes), sum(sizes.values()), arena, peak)
