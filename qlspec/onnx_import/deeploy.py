"""Deeploy flavour: QuantLib's `RequantShift` custom node (domain "PACTOps" or "")."""

from __future__ import annotations

import onnx

from qlspec.graph.ir import Node, levels_range, narrow
from qlspec.onnx_import.importer import Importer


def divide_mul(imp: Importer, node: onnx.NodeProto, mul_name: str, k: int) -> str:
    """mul/k as a new constant, for a requantiser after an average pool (k | mul is required:
    QuantLab's AlignAvgPoolPass guarantees it, and only then is sum-then-requantise exact)."""
    mul = imp.int_value(node, mul_name)
    if k == 1:
        return imp.int_const(node, mul_name)
    if (mul % k != 0).any():
        imp.fail(
            node,
            f"follows an average pool of {k} values but its mul is not a multiple of {k}; "
            "export with QuantLab's AlignAvgPoolPass so that the mean can be requantised exactly",
        )
    name = f"{mul_name}/{k}"
    if name not in imp.builder.constants:
        imp.builder.add_constant(name, narrow(mul // k))
    return name


def lower_requant_shift(imp: Importer, node: onnx.NodeProto) -> None:
    """RequantShift(x, mul, add){div, signed, n_levels | n_levels_out}: the same arithmetic as
    the IR op of that name, half-up rounding included (QuantLib/Deeploy add div/2 in the kernel)."""
    a = imp.attributes(node)
    div = a.integer("div")
    signed = bool(a.integer("signed", 1))
    if a.has("n_levels_out") and a.has("n_levels"):
        imp.fail(node, "has both n_levels and n_levels_out")
    n_levels = a.integer("n_levels_out") if a.has("n_levels_out") else a.integer("n_levels")
    a.finish()
    if len(node.input) != 3 or len([o for o in node.output if o]) != 1:
        imp.fail(node, f"RequantShift takes 3 inputs (x, mul, add) and gives 1 output (got {len(node.input)} and {len(node.output)})")
    if div < 1 or div & (div - 1):
        imp.fail(node, f"div must be a power of two (got {div})")
    if n_levels < 2:
        imp.fail(node, f"n_levels must be >= 2 (got {n_levels})")
    x_name, mul_name, add_name = node.input
    k = imp.take_divisor(x_name)
    x = imp.tensor(node, x_name)
    mul = divide_mul(imp, node, mul_name, k)
    add = imp.int_const(node, add_name)
    lo, hi = levels_range(n_levels, signed)
    imp.emit(node, Node.make("RequantShift", imp.node_name(node), [x, mul, add], [node.output[0]], div=div, lo=lo, hi=hi))
