"""Gemm: integer fully-connected layer with an exact int32 accumulator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qlspec.engine.exact_matmul import exact_matmul
from qlspec.engine.ops.base import Op, require
from qlspec.graph.ir import TensorInfo


@dataclass(frozen=True)
class Gemm(Op):
    """y = A' @ B' + C, A' = A.T if trans_a else A, B' = B.T if trans_b else B.

    A: integer (M, K); B: integer (K, N) or (N, K) with trans_b; C: optional integer, broadcast to
    (M, N) (usually the bias, shape (N,)). y: int32, exact (ONNX Gemm with alpha = beta = 1).
    A result outside int32 is an error, never wrapped.
    """

    op_type = "Gemm"
    n_inputs = (2, 3)
    trans_a: bool = False
    trans_b: bool = False

    def _dims(self, a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, int, int]:
        require(len(a) == 2 and len(b) == 2, f"Gemm needs 2-D operands (got {a} and {b})")
        m, k = (a[1], a[0]) if self.trans_a else a
        k2, n = (b[1], b[0]) if self.trans_b else b
        require(k == k2, f"inner dimensions differ: A gives K={k}, B gives K={k2}")
        return m, k, n

    def infer(self, ins, vals):
        m, _, n = self._dims(ins[0].shape, ins[1].shape)
        if len(ins) > 2 and ins[2] is not None:
            try:
                np.broadcast_shapes(ins[2].shape, (m, n))
            except ValueError:
                require(False, f"C of shape {ins[2].shape} does not broadcast to ({m}, {n})")
        return [TensorInfo((m, n), 32, True)]

    def macs(self, ins, outs):
        m, k, n = self._dims(ins[0].shape, ins[1].shape)
        return m * k * n

    def batch_free(self) -> bool:
        return not self.trans_a

    def run(self, a, b, c=None):
        a = a.T if self.trans_a else a
        b = b.T if self.trans_b else b
        y = exact_matmul(a, b)
        return y if c is None else y + c.astype(np.int64)
