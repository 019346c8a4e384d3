"""EliminateDeadNodes: drop nodes and constants that no graph output depends on."""

from __future__ import annotations

from qlspec.graph.ir import Graph
from qlspec.graph.passes.base import Pass


class EliminateDeadNodes(Pass):
    """Remove every node whose outputs reach no graph output, and every unused constant.
    Arithmetic unchanged: outputs depend only on their ancestors."""

    def apply(self, g: Graph) -> tuple[Graph, bool]:
        live = set(g.outputs)
        keep = []
        for n in reversed(g.nodes):
            if any(t in live for t in n.outputs):
                keep.append(n)
                live.update(t for t in n.inputs if t)
        dead_nodes = [n for n in g.nodes if n not in keep]
        dead_consts = [c for c in g.constants if c not in live]
        if not dead_nodes and not dead_consts:
            return g, False
        return g.rewrite(remove=dead_nodes, drop_constants=dead_consts), True
