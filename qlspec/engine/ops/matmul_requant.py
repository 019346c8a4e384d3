"""MatMulRequant: a MatMul whose accumulator goes straight into a RequantShift (made by a fusion pass)."""

from __future__ import annotations

from dataclasses import dataclass

from qlspec.engine.ops.base import Op
from qlspec.engine.ops.matmul import MatMul
from qlspec.engine.ops.requant_shift import RequantShift


@dataclass(frozen=True)
class MatMulRequant(Op):
    """y = RequantShift(MatMul(a, b), mul, add), exactly (see both docstrings). Inputs (a, b, mul, add)."""

    op_type = "MatMulRequant"
    n_inputs = (4, 4)
    clips_output = True
    div: int
    lo: int
    hi: int

    @property
    def requant(self) -> RequantShift:
        return RequantShift(div=self.div, lo=self.lo, hi=self.hi)

    def __post_init__(self) -> None:
        _ = self.requant  # building it validates the attributes

    def infer(self, ins, vals):
        (acc,) = MatMul().infer(ins[:2], vals[:2])
        return self.requant.infer([acc, ins[2], ins[3]], [None, vals[2], vals[3]])

    def macs(self, ins, outs):
        return MatMul().macs(ins[:2], outs)

    def run(self, a, b, mul, add):
        return self.requant.run(MatMul().run(a, b), mul, add)
