"""DORY flavour: requantisation as plain ONNX ops with DORY's annotations (``requant_node=False``).

Each `RequantShift` is ``Mul(x, mul) -> Add(., add) -> Div(., Constant 2**D) -> Floor -> Clip(min, max)``
computing ``clip(floor((x*mul + add) / 2**D), lo, hi)``: DORY has no implicit half, so `add` is the
graph's plus ``2**(D-1)`` (and `mul` times k after an average pool of k values). The Mul carries the
graph node's name, so the importer's `RequantShift` is named as F2T's. Annotations, as QuantLib's
``annotate_onnx`` adds them (INT attributes): ``weight_bits`` (the signed width of the weights'
own range, which is QuantLib's ``int(log2(n_levels + 1.2))`` for weights that use their grid) and ``bias_bits = 32`` on Conv/Gemm, ``mult_bits = 32`` on Mul, ``add_bits = 32``
on Add, ``out_bits = round(log2(max - min + 1))`` (32 if more than 8) on Clip. The side JSON
(``config_<name>.json``) carries ``input_bits``, ``input_signed`` and our ``input_eps``.

The annotations are not in the ONNX schemas, so onnx.checker and onnxruntime reject the annotated
file ("Unrecognized attribute"), as they reject QuantLab's own DORY files; `strip_annotations`
gives the same graph without them, which both accept.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import onnx
from onnx import TensorProto, helper

from qlspec.export.onnx_graph import COMMON, OnnxBuilder, Rule, build_model, pool_k
from qlspec.graph.ir import Graph, Node, bits_for_range

ANNOTATIONS = ("weight_bits", "bias_bits", "mult_bits", "add_bits", "out_bits")
REQUANT_BITS = 32  # QuantLib's annotate_onnx default


def _requant_chain(b: OnnxBuilder, n: Node) -> None:
    x, mul, add = n.inputs
    div = int(n.attr("div"))
    k = pool_k(b.g, x)
    name = n.name
    mul = b.const(f"{mul}*{k}" if k > 1 else mul, b.g.constants[mul].astype(np.int64) * k)
    add = b.const(f"{add}+half", b.g.constants[add].astype(np.int64) + div // 2)
    t1, t2, t3, t4, t5 = (f"{name}.{s}" for s in ("mul_out", "add_out", "div_const", "div_out", "floor_out"))
    b.node("Mul", [x, mul], [t1], name=name, mult_bits=REQUANT_BITS)
    b.node("Add", [t1, add], [t2], name=f"{name}.add", add_bits=REQUANT_BITS)
    b.node("Constant", [], [t3], name=f"{name}.div", value=helper.make_tensor(t3, TensorProto.FLOAT, [], [float(div)]))
    b.node("Div", [t2, t3], [t4], name=f"{name}.divide")
    b.node("Floor", [t4], [t5], name=f"{name}.floor")
    lo, hi = int(n.attr("lo")), int(n.attr("hi"))
    out_bits = round(math.log2(hi - lo + 1))
    b.node("Clip", [t5], list(n.outputs), name=f"{name}.clip", min=float(lo), max=float(hi), out_bits=out_bits if out_bits <= 8 else 32)


def _annotated(rule: Rule) -> Rule:
    def write(b: OnnxBuilder, n: Node) -> None:
        rule(b, n)
        w = b.g.constants[n.inputs[1]]
        bits, _ = bits_for_range(min(int(w.min(initial=0)), -1), int(w.max(initial=0)))
        b.nodes[-1].attribute.extend([helper.make_attribute("weight_bits", bits), helper.make_attribute("bias_bits", 32)])

    return write


RULES = {**COMMON, "RequantShift": _requant_chain, "Conv": _annotated(COMMON["Conv"]), "Gemm": _annotated(COMMON["Gemm"])}


def to_onnx(g: Graph) -> onnx.ModelProto:
    """The DORY-flavour ONNX model of the integer graph `g` (annotated)."""
    return build_model(g, RULES, flavour="dory")


def strip_annotations(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` without DORY's annotation attributes (for onnx.checker and onnxruntime)."""
    m = copy.deepcopy(model)
    for n in m.graph.node:
        keep = [a for a in n.attribute if a.name not in ANNOTATIONS]
        del n.attribute[:]
        n.attribute.extend(keep)
    return m


def side_config(input_info, input_eps: float, rounding: str, onnx_file: str) -> dict:
    """DORY's ``config_<name>.json`` plus the input eps and rounding (which the ONNX file does not carry)."""
    return {
        "BNRelu_bits": REQUANT_BITS,
        "onnx_file": onnx_file,
        "code reserved space": 0,
        "n_inputs": 1,
        "input_bits": input_info.bits,
        "input_signed": bool(input_info.signed),
        "input_eps": float(input_eps),
        "input_rounding": rounding,
    }
