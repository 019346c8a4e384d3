"""RequantAdd: the DORY residual adder (QuantLib's `DORYAdder`), with both inputs and the sum requantised."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qlspec.engine.ops.base import INT64_LIMIT, Op, magnitude, require
from qlspec.engine.ops.requant_shift import requantise, shift_of
from qlspec.graph.ir import TensorInfo


@dataclass(frozen=True)
class RequantAdd(Op):
    """y = clip(R_out(R_1(x1) + R_2(x2)), lo, hi)

    R_k(v) = floor((v*mul_k + add_k + div_k//2) / div_k) when rq_k is true, else v (k = in1,
    in2, out): the same arithmetic as `RequantShift` without its clip, rounding half up. All
    parameters are scalars. x1, x2: integer tensors of one shape; y: the type of [lo, hi].
    Exact in int64 (checked). DORY exports spell this as an ONNX `Add` with attributes
    in1_*/in2_*/out_* whose `add` already holds div//2; the importer subtracts it.
    """

    op_type = "RequantAdd"
    n_inputs = (2, 2)
    clips_output = True
    lo: int
    hi: int
    in1_mul: int = 1
    in1_add: int = 0
    in1_div: int = 1
    in1_rq: bool = False
    in2_mul: int = 1
    in2_add: int = 0
    in2_div: int = 1
    in2_rq: bool = False
    out_mul: int = 1
    out_add: int = 0
    out_div: int = 1
    out_rq: bool = False

    def __post_init__(self) -> None:
        for d in (self.in1_div, self.in2_div, self.out_div):
            shift_of(d)
        require(self.lo <= self.hi, f"empty output range [{self.lo}, {self.hi}]")

    def _terms(self):
        return ((self.in1_mul, self.in1_add, self.in1_div, self.in1_rq), (self.in2_mul, self.in2_add, self.in2_div, self.in2_rq))

    def infer(self, ins, vals):
        a, b = ins
        require(a.shape == b.shape, f"inputs must have one shape (got {a.shape} and {b.shape})")
        total = 0
        for info, (mul, add, div, rq) in zip(ins, self._terms()):
            m = magnitude(info)
            require(not rq or m * abs(mul) + abs(add) + div < INT64_LIMIT, "input requantisation may exceed int64")
            total += (m * abs(mul) + abs(add) + div) // div + 1 if rq else m
        require(
            not self.out_rq or total * abs(self.out_mul) + abs(self.out_add) + self.out_div < INT64_LIMIT,
            "output requantisation may exceed int64",
        )
        return [TensorInfo.for_range(a.shape, self.lo, self.hi)]

    def run(self, x1, x2):
        terms = []
        for x, (mul, add, div, rq) in zip((x1, x2), self._terms()):
            x = x.astype(np.int64)
            terms.append(requantise(x, np.int64(mul), np.int64(add), shift_of(div)) if rq else x)
        s = terms[0] + terms[1]
        if self.out_rq:
            s = requantise(s, np.int64(self.out_mul), np.int64(self.out_add), shift_of(self.out_div))
        return np.clip(s, self.lo, self.hi)
