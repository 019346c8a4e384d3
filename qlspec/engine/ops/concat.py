"""Concat: join integer tensors along one axis."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qlspec.engine.ops.base import Op, require
from qlspec.graph.ir import TensorInfo


@dataclass(frozen=True)
class Concat(Op):
    """y = concatenate(inputs, axis); values unchanged. `axis` may be negative (counts from the end).
    y's type holds every input's range (int8 with uint8 -> 9 bits signed)."""

    op_type = "Concat"
    n_inputs = (1, 1 << 16)
    axis: int = 1

    def _axis(self, rank: int) -> int:
        require(-rank <= self.axis < rank, f"axis {self.axis} out of range for rank {rank}")
        return self.axis % rank

    def infer(self, ins, vals):
        rank = len(ins[0].shape)
        ax = self._axis(rank)
        for t in ins:
            require(
                len(t.shape) == rank and all(d == e for i, (d, e) in enumerate(zip(t.shape, ins[0].shape)) if i != ax),
                f"shapes {[t.shape for t in ins]} differ outside axis {self.axis}",
            )
        shape = list(ins[0].shape)
        shape[ax] = sum(t.shape[ax] for t in ins)
        return [TensorInfo.for_range(shape, min(t.lo for t in ins), max(t.hi for t in ins))]

    def batch_free(self) -> bool:
        return self.axis != 0

    def run(self, *xs):
        return np.concatenate([x.astype(np.int64) for x in xs], axis=self.axis)
