"""RemoveIdentityRequant: drop RequantShift nodes that provably return their input."""

from __future__ import annotations

import numpy as np

from qlspec.graph.ir import Graph, Node
from qlspec.graph.passes.base import Pass


def is_identity_requant(g: Graph, n: Node) -> bool:
    """True when RequantShift(x) == x for every x of x's type.

    With mul == div everywhere, floor((x*div + add + div//2) / div) = x + floor((add + div//2) / div),
    which is x exactly when 0 <= add + div//2 < div everywhere; the clip is then a no-op when x's
    type range lies inside [lo, hi]. Only exact integer conditions, no tolerance."""
    if n.op != "RequantShift":
        return False
    x, mul, add = n.inputs
    if not (g.is_constant(mul) and g.is_constant(add)):
        return False
    div = n.attr("div")
    m = g.constants[mul].astype(np.int64)
    a = g.constants[add].astype(np.int64) + div // 2
    info = g.info(x)
    out = g.info(n.outputs[0])
    return (
        bool(np.all(m == div))
        and bool(np.all((a >= 0) & (a < div)))
        and n.attr("lo") <= info.lo
        and info.hi <= n.attr("hi")
        and out.shape == info.shape
    )


class RemoveIdentityRequant(Pass):
    """Bypass one identity RequantShift (QuantLib's `mul == div, add == 0` adder-input requantisers,
    see `is_identity_requant` for the exact condition). Arithmetic unchanged by that condition."""

    def apply(self, g: Graph) -> tuple[Graph, bool]:
        for n in g.nodes:
            if is_identity_requant(g, n):
                g2 = g.bypass(n)
                if g2 is not None:
                    return g2, True
        return g, False
