"""FuseRequantIntoLinear: Conv/Gemm/MatMul followed by its RequantShift -> one ConvRequant/GemmRequant/MatMulRequant."""

from __future__ import annotations

from qlspec.graph.ir import Graph, Node
from qlspec.graph.passes.base import Pass

FUSED = {"Conv": "ConvRequant", "Gemm": "GemmRequant", "MatMul": "MatMulRequant"}


class FuseRequantIntoLinear(Pass):
    """A Conv, Gemm or MatMul whose int32 accumulator is read only by one RequantShift (as its x)
    and is not a graph output becomes one fused node. Arithmetic unchanged: the fused op is
    defined as the linear op followed by RequantShift, same accumulator, same rounding; the
    accumulator simply no longer needs a buffer of its own."""

    def apply(self, g: Graph) -> tuple[Graph, bool]:
        for lin in g.nodes:
            if lin.op not in FUSED:
                continue
            (acc,) = lin.outputs
            users = g.consumers(acc)
            if acc in g.outputs or len(users) != 1 or users[0].op != "RequantShift":
                continue
            rq = users[0]
            x, mul, add = rq.inputs
            if x != acc or acc in (mul, add):
                continue
            ins = list(lin.inputs)
            if lin.op in ("Conv", "Gemm"):
                ins += [""] * (3 - len(ins))  # the bias slot stays, possibly empty
            fused = Node.make(FUSED[lin.op], lin.name, [*ins, mul, add], rq.outputs, **lin.attr_dict, **rq.attr_dict)
            return g.rewrite(remove=[lin, rq], add=[fused]), True
        return g, False
