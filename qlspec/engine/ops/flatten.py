"""Flatten: reshape to 2-D at an axis."""

from __future__ import annotations

import math
from dataclasses import dataclass

from qlspec.engine.ops.base import Op, require
from qlspec.graph.ir import TensorInfo


@dataclass(frozen=True)
class Flatten(Op):
    """y = x.reshape(prod(x.shape[:axis]), prod(x.shape[axis:])) in C (row-major) order; values
    and type unchanged. On NCHW, axis=1 gives (N, C*H*W) with index c*H*W + h*W + w."""

    op_type = "Flatten"
    axis: int = 1

    def _axis(self, rank: int) -> int:
        require(-rank <= self.axis <= rank, f"axis {self.axis} out of range for rank {rank}")
        return self.axis % rank if self.axis < 0 else self.axis

    def infer(self, ins, vals):
        x = ins[0]
        ax = self._axis(len(x.shape))
        return [TensorInfo((math.prod(x.shape[:ax]), math.prod(x.shape[ax:])), x.bits, x.signed)]

    def batch_free(self) -> bool:
        return self.axis >= 1

    def run(self, x):
        ax = self._axis(x.ndim)
        return x.reshape(math.prod(x.shape[:ax]), -1)
