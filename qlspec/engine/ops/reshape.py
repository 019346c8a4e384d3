"""Reshape: change the shape, keep the C-order sequence of values."""

from __future__ import annotations

import math
from dataclasses import dataclass

from qlspec.engine.ops.base import Op, require
from qlspec.graph.ir import TensorInfo


def resolve_shape(src: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """ONNX rule: 0 copies the input's dimension at that index, one -1 is inferred."""
    require(shape.count(-1) <= 1, f"at most one -1 in shape {shape}")
    dims = [src[i] if d == 0 else d for i, d in enumerate(shape)]
    require(all(d >= -1 for d in dims) and (0 not in shape or len(src) >= len(shape)), f"invalid shape {shape}")
    known = math.prod(d for d in dims if d != -1)
    total = math.prod(src)
    if -1 in dims:
        require(known > 0 and total % known == 0, f"cannot reshape {src} to {shape}")
        dims[dims.index(-1)] = total // known
    require(math.prod(dims) == total, f"cannot reshape {src} ({total} values) to {shape}")
    return tuple(dims)


@dataclass(frozen=True)
class Reshape(Op):
    """y = x.reshape(shape) in C order; 0 in `shape` copies x's dimension at that index and one -1
    is inferred (ONNX Reshape, allowzero=0). Values and type unchanged."""

    op_type = "Reshape"
    shape: tuple[int, ...]

    def infer(self, ins, vals):
        x = ins[0]
        return [TensorInfo(resolve_shape(x.shape, self.shape), x.bits, x.signed)]

    def batch_free(self) -> bool:
        return len(self.shape) > 0 and self.shape[0] == 0

    def run(self, x):
        return x.reshape(resolve_shape(x.shape, self.shape))
