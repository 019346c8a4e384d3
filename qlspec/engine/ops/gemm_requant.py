"""GemmRequant: a Gemm whose accumulator goes straight into a RequantShift (made by a fusion pass)."""

from __future__ import annotations

from dataclasses import dataclass

from qlspec.engine.ops.base import Op
from qlspec.engine.ops.gemm import Gemm
from qlspec.engine.ops.requant_shift import RequantShift


@dataclass(frozen=True)
class GemmRequant(Op):
    """y = RequantShift(Gemm(a, b, c), mul, add), exactly (see both docstrings). Inputs
    (a, b, c, mul, add), c may be absent (""). mul/add are usually per column, shape (N,).
    """

    op_type = "GemmRequant"
    n_inputs = (5, 5)
    optional = (2,)
    clips_output = True
    div: int
    lo: int
    hi: int
    trans_a: bool = False
    trans_b: bool = False

    @property
    def gemm(self) -> Gemm:
        return Gemm(trans_a=self.trans_a, trans_b=self.trans_b)

    @property
    def requant(self) -> RequantShift:
        return RequantShift(div=self.div, lo=self.lo, hi=self.hi)

    def __post_init__(self) -> None:
        _ = self.gemm, self.requant  # building both halves validates their attributes

    def infer(self, ins, vals):
        (acc,) = self.gemm.infer(ins[:3], vals[:3])
        return self.requant.infer([acc, ins[3], ins[4]], [None, vals[3], vals[4]])

    def macs(self, ins, outs):
        return self.gemm.macs(ins[:3], outs)

    def batch_free(self) -> bool:
        return self.gemm.batch_free()

    def run(self, a, b, c, mul, add):
        return self.requant.run(self.gemm.run(a, b, c), mul, add)
