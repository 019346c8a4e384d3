"""The IR op set: one class per module, each docstring the exact contract every backend meets.

Ordered roughly from simple to complex. `op_for(node)` builds the op for a node, with its
attributes checked.
"""

from __future__ import annotations

from qlspec.engine.ops.add import Add
from qlspec.engine.ops.base import Op
from qlspec.engine.ops.clip import Clip
from qlspec.engine.ops.concat import Concat
from qlspec.engine.ops.conv import Conv
from qlspec.engine.ops.conv_requant import ConvRequant
from qlspec.engine.ops.flatten import Flatten
from qlspec.engine.ops.gemm import Gemm
from qlspec.engine.ops.gemm_requant import GemmRequant
from qlspec.engine.ops.global_sum_pool import GlobalSumPool
from qlspec.engine.ops.matmul import MatMul
from qlspec.engine.ops.matmul_requant import MatMulRequant
from qlspec.engine.ops.max_pool import MaxPool
from qlspec.engine.ops.pad import Pad
from qlspec.engine.ops.quantise import Quantise
from qlspec.engine.ops.requant_add import RequantAdd
from qlspec.engine.ops.requant_shift import RequantShift
from qlspec.engine.ops.reshape import Reshape
from qlspec.engine.ops.sum_pool import SumPool
from qlspec.engine.ops.transpose import Transpose
from qlspec.errors import GraphError
from qlspec.graph.ir import Node

OPS: dict[str, type[Op]] = {
    cls.op_type: cls
    for cls in (
        Flatten,
        Reshape,
        Transpose,
        Pad,
        Clip,
        Concat,
        Add,
        MaxPool,
        SumPool,
        GlobalSumPool,
        Quantise,
        RequantShift,
        RequantAdd,
        Conv,
        Gemm,
        MatMul,
        ConvRequant,
        GemmRequant,
        MatMulRequant,
    )
}


def op_for(node: Node) -> Op:
    """The op object of `node`, its attributes validated; GraphError for an unknown op."""
    cls = OPS.get(node.op)
    if cls is None:
        raise GraphError(f"unknown op {node.op!r} (supported: {', '.join(sorted(OPS))})", where=node.where())
    return cls.from_node(node)


__all__ = ["OPS", "Op", "op_for", *sorted(OPS)]
