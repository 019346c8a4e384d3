"""The pass contract and the driver.

A pass is a pure function of a graph: `apply(g) -> (g2, changed)`. It makes at most one rewrite
per call and returns `changed=True` when it did, so it never edits a graph it is iterating; the
driver calls it again until it reports no change (it MUST eventually report False). Every rewrite
is an exact integer identity: the reference engine gives the same outputs, bit for bit, before
and after (each pass's docstring says why).
"""

from __future__ import annotations

from collections.abc import Sequence

from qlspec.errors import GraphError
from qlspec.graph.ir import Graph


class Pass:
    name: str = ""

    def apply(self, g: Graph) -> tuple[Graph, bool]:
        raise NotImplementedError

    def __init_subclass__(cls) -> None:
        cls.name = cls.name or cls.__name__


def run_to_fixed_point(g: Graph, passes: Sequence[Pass], *, max_steps: int = 10_000) -> Graph:
    """Apply each pass until it reports no change, and repeat the sequence until a whole sweep
    changes nothing (one pass can enable another: clip folding enables fusion, etc.)."""
    steps = 0
    while True:
        changed_sweep = False
        for p in passes:
            while True:
                g, changed = p.apply(g)
                if not changed:
                    break
                changed_sweep = True
                steps += 1
                if steps > max_steps:
                    raise GraphError(f"pass {p.name} did not reach a fixed point after {max_steps} rewrites")
        if not changed_sweep:
            return g
