"""GlobalSumPool: the integer half of a global average pool."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qlspec.engine.ops.base import Op, require
from qlspec.graph.ir import TensorInfo


@dataclass(frozen=True)
class GlobalSumPool(Op):
    """y[n, c, 0, 0] = sum_{h, w} x[n, c, h, w] (ONNX GlobalAveragePool without the division by
    k = H*W, which the importer moves into the following RequantShift's mul, as for `SumPool`).
    y: the smallest type holding [k*lo, k*hi] of x's range."""

    op_type = "GlobalSumPool"

    def infer(self, ins, vals):
        x = ins[0]
        require(len(x.shape) == 4, f"GlobalSumPool input must be NCHW (got shape {x.shape})")
        k = x.shape[2] * x.shape[3]
        return [TensorInfo.for_range((*x.shape[:2], 1, 1), k * x.lo, k * x.hi)]

    def macs(self, ins, outs):
        return ins[0].size

    def run(self, x):
        return x.astype(np.int64).sum(axis=(2, 3), keepdims=True)
