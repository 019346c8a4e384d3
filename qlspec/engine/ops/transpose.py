"""Transpose: permute axes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qlspec.engine.ops.base import Op, require
from qlspec.graph.ir import TensorInfo


@dataclass(frozen=True)
class Transpose(Op):
    """y = x.transpose(perm): y.shape[i] = x.shape[perm[i]]; values and type unchanged."""

    op_type = "Transpose"
    perm: tuple[int, ...]

    def infer(self, ins, vals):
        x = ins[0]
        require(sorted(self.perm) == list(range(len(x.shape))), f"perm {self.perm} is not a permutation of {len(x.shape)} axes")
        return [TensorInfo(tuple(x.shape[p] for p in self.perm), x.bits, x.signed)]

    def batch_free(self) -> bool:
        return len(self.perm) > 0 and self.perm[0] == 0

    def run(self, x):
        return np.transpose(x, self.perm)
