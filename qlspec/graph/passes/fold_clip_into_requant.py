"""FoldClipIntoRequant: merge a Clip into the requantiser that feeds it, or drop a Clip that cannot clip."""

from __future__ import annotations

from qlspec.engine.ops import OPS
from qlspec.graph.ir import Graph, Node
from qlspec.graph.passes.base import Pass


class FoldClipIntoRequant(Pass):
    """Two exact rewrites, one per call:

    1. Clip(lo2, hi2) whose input's type range already lies inside [lo2, hi2] is the identity:
       bypass it.
    2. Clip(lo2, hi2) fed only by an op that ends in its own clip to [lo, hi] (RequantShift,
       RequantAdd, the fused *Requant ops): clip(clip(v, lo, hi), lo2, hi2) = clip(v, max(lo, lo2),
       min(hi, hi2)) when the two ranges overlap, so the producer takes the narrower range and
       writes the Clip's output tensor. (DORY's Mul/Add/Div/Floor -> Clip becomes one RequantShift.)
    """

    def apply(self, g: Graph) -> tuple[Graph, bool]:
        for clip in g.nodes:
            if clip.op != "Clip":
                continue
            (x,) = clip.inputs
            lo2, hi2 = clip.attr("lo"), clip.attr("hi")
            info = g.info(x)
            if lo2 <= info.lo and info.hi <= hi2:
                g2 = g.bypass(clip)
                if g2 is not None:
                    return g2, True
            prod = g.producer(x)
            if prod is None or not OPS[prod.op].clips_output or len(g.consumers(x)) != 1 or x in g.outputs:
                continue
            lo, hi = max(prod.attr("lo"), lo2), min(prod.attr("hi"), hi2)
            if lo > hi:
                continue  # disjoint ranges: the result is a constant; leave it to the engine
            merged = Node(prod.op, prod.name, prod.inputs, clip.outputs, prod.attrs).with_attrs(lo=lo, hi=hi)
            return g.rewrite(remove=[prod, clip], add=[merged]), True
        return g, False
