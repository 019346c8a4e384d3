"""FoldConstants: evaluate nodes whose inputs are all constants."""

from __future__ import annotations

from qlspec.engine.ops import op_for
from qlspec.graph.ir import Graph
from qlspec.graph.passes.base import Pass


class FoldConstants(Pass):
    """A node whose inputs are all constants (a Transpose of a weight, a Reshape of a bias, ...)
    becomes a constant holding its result, computed by the reference op itself and stored in the
    node's output type. Arithmetic unchanged: the same op on the same values, once, ahead of time.
    Graph outputs are left as they are (a graph must compute its outputs)."""

    def apply(self, g: Graph) -> tuple[Graph, bool]:
        for n in g.nodes:
            if n.inputs and all(t == "" or g.is_constant(t) for t in n.inputs) and n.outputs[0] not in g.outputs:
                args = [g.constants[t] if t else None for t in n.inputs]
                (out,) = n.outputs
                value = op_for(n).run(*args).astype(g.info(out).dtype)
                return g.rewrite(remove=[n], constants={out: value}), True
        return g, False
