"""DORY flavour: requantisation spelled `Mul -> [Add] -> Div(2^s) -> Floor` (then usually a `Clip`)
and the residual adder spelled as an `Add` with in1_*/in2_*/out_* attributes."""

from __future__ import annotations

import numpy as np
import onnx

from qlspec.engine.ops.requant_shift import reach
from qlspec.graph.ir import Node, levels_range, narrow
from qlspec.onnx_import.deeploy import divide_mul
from qlspec.onnx_import.importer import Importer
from qlspec.onnx_import.standard import lower_plain_add

CHAIN = "Mul -> [Add] -> Div(2^s) -> Floor"


def _split_const(imp: Importer, node: onnx.NodeProto) -> tuple[str, str] | None:
    """(activation, constant) inputs of a binary node, in that order; None unless exactly one is constant."""
    if len(node.input) != 2:
        return None
    a, b = node.input
    ca, cb = imp.const_value(a) is not None, imp.const_value(b) is not None
    if ca == cb:
        return None
    return (b, a) if ca else (a, b)


def _next(imp: Importer, node: onnx.NodeProto, op: str) -> onnx.NodeProto | None:
    nxt = imp.single_consumer(node.output[0])
    return nxt if nxt is not None and nxt.op_type == op and (nxt.domain or "") == "" else None


def lower_requant_chain(imp: Importer, mul_node: onnx.NodeProto) -> None:
    """Mul(x, mul) -> [Add(., add)] -> Div(., 2^s) -> Floor computes floor((x*mul + add)/2^s)
    with DORY's rounding half already inside `add`; it becomes RequantShift(x, mul, add - div//2)
    with no clipping yet (its range is the exact range of the result; a following Clip is
    folded in by the FoldClipIntoRequant pass)."""
    imp.attributes(mul_node).finish()
    split = _split_const(imp, mul_node)
    if split is None:
        imp.fail(mul_node, f"Mul is supported only as the start of a requantisation {CHAIN} with one constant operand")
    x_name, mul_name = split
    chain = [mul_node]
    node = mul_node
    add_name = None
    nxt = _next(imp, node, "Add")
    if nxt is not None:
        imp.attributes(nxt).finish()
        s = _split_const(imp, nxt)
        if s is None:
            imp.fail(nxt, f"the Add inside a requantisation {CHAIN} needs one constant operand")
        add_name = s[1]
        chain.append(nxt)
        node = nxt
    div_node = _next(imp, node, "Div")
    if div_node is None or div_node.input[0] != node.output[0] or imp.const_value(div_node.input[1]) is None:
        imp.fail(
            mul_node, f"Mul is supported only as the start of a requantisation {CHAIN}; its result must feed exactly one Div by a constant"
        )
    imp.attributes(div_node).finish()
    div_raw = np.asarray(imp.const_value(div_node.input[1])).ravel()
    div = float(div_raw[0]) if div_raw.size == 1 else 0.0
    if div < 1 or div != int(div) or int(div) & (int(div) - 1):
        imp.fail(div_node, f"the requantisation divisor must be a scalar power of two (got {div_raw.tolist()})")
    div = int(div)
    floor_node = _next(imp, div_node, "Floor")
    if floor_node is None:
        imp.fail(div_node, "a requantisation Div must be followed by Floor (and be its only consumer)")
    imp.attributes(floor_node).finish()
    chain += [div_node, floor_node]
    imp.consume(*chain)

    k = imp.take_divisor(x_name)
    x = imp.tensor(mul_node, x_name)
    mul = divide_mul(imp, mul_node, mul_name, k)
    raw_add = imp.int_value(chain[1], add_name) if add_name is not None else np.zeros((), np.int64)
    add_value = raw_add.astype(np.int64) - div // 2
    add = f"{add_name or mul_node.name + '.add'}-half"
    imp.builder.add_constant(add, narrow(add_value))
    bound = reach(imp.info(x), imp.builder.constants[mul], imp.builder.constants[add], div)
    imp.emit(
        floor_node, Node.make("RequantShift", imp.node_name(mul_node), [x, mul, add], [floor_node.output[0]], div=div, lo=-bound, hi=bound)
    )


_ADDER_FIELDS = ("mul", "add", "shift", "rq")


def lower_add(imp: Importer, node: onnx.NodeProto) -> None:
    """An Add with `in1_*` attributes is DORY's residual adder (RequantAdd); an Add right after a
    requantisation Mul is part of that chain (handled there); anything else is a plain Add."""
    names = {a.name for a in node.attribute}
    if not any(n.startswith(("in1_", "in2_", "out_")) for n in names):
        lower_plain_add(imp, node)
        return
    a = imp.attributes(node)
    params: dict[str, int | bool] = {}
    for side in ("in1", "in2", "out"):
        rq = bool(a.int(f"{side}_rq", 0))
        a.int(f"{side}_n_levels", 256)  # informative for inputs; the output's is read below
        if rq:
            shift = a.int(f"{side}_shift")
            if not 0 <= shift < 63:
                imp.fail(node, f"{side}_shift must be in [0, 62] (got {shift})")
            div = 1 << shift
            params.update(
                {
                    f"{side}_mul": a.int(f"{side}_mul"),
                    f"{side}_add": a.int(f"{side}_add") - div // 2,
                    f"{side}_div": div,
                    f"{side}_rq": True,
                }
            )
        else:
            for f in ("mul", "add", "shift"):
                a.int(f"{side}_{f}", 0)
    lo, hi = levels_range(a.int("out_n_levels", 256), bool(a.int("out_signed", 0)))
    a.int("in1_signed", 0), a.int("in2_signed", 0)
    a.finish()
    if len(node.input) != 2:
        imp.fail(node, f"the residual Add takes 2 inputs (got {len(node.input)})")
    ins = [imp.tensor(node, t) for t in node.input]
    imp.emit(node, Node.make("RequantAdd", imp.node_name(node), ins, [node.output[0]], lo=lo, hi=hi, **params))
