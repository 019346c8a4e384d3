"""Add: exact integer addition (the residual add between two aligned activations)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qlspec.engine.ops.base import Op, require
from qlspec.graph.ir import TensorInfo


@dataclass(frozen=True)
class Add(Op):
    """y = a + b, exact (numpy broadcasting). y's type is the smallest holding
    [lo_a + lo_b, hi_a + hi_b], so it never saturates (int8 + int8 -> 9 bits, held in int16)."""

    op_type = "Add"
    n_inputs = (2, 2)

    def infer(self, ins, vals):
        a, b = ins
        try:
            shape = np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            shape = None
        require(shape is not None, f"shapes {a.shape} and {b.shape} do not broadcast")
        return [TensorInfo.for_range(shape, a.lo + b.lo, a.hi + b.hi)]

    def run(self, a, b):
        return a.astype(np.int64) + b.astype(np.int64)
