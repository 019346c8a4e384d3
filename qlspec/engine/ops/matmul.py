"""MatMul: integer matrix product (numpy/ONNX matmul broadcasting) with an exact int32 accumulator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qlspec.engine.exact_matmul import exact_matmul
from qlspec.engine.ops.base import Op, require
from qlspec.errors import GraphError
from qlspec.graph.ir import TensorInfo


def matmul_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    require(len(a) >= 2 and len(b) >= 2, f"MatMul operands must be at least 2-D (got {a} and {b})")
    require(a[-1] == b[-2], f"inner dimensions differ: {a} @ {b}")
    try:
        batch = np.broadcast_shapes(a[:-2], b[:-2])
    except ValueError:
        raise GraphError(f"batch dimensions of {a} and {b} do not broadcast") from None
    return (*batch, a[-2], b[-1])


@dataclass(frozen=True)
class MatMul(Op):
    """y[..., i, j] = sum_k a[..., i, k] * b[..., k, j], exact; y: int32 (out of range is an error).

    a, b: integer, at least 2-D, leading axes broadcast as in numpy. QuantLab exports bias-free
    linear layers as MatMul with a constant (K, N) weight.
    """

    op_type = "MatMul"
    n_inputs = (2, 2)

    def infer(self, ins, vals):
        return [TensorInfo(matmul_shape(ins[0].shape, ins[1].shape), 32, True)]

    def macs(self, ins, outs):
        return outs[0].size * ins[0].shape[-1]

    def run(self, a, b):
        return exact_matmul(a, b)
