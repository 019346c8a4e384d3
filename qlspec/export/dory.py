"""DORY flavour: requantisation as plain ONNX ops with DORY's annotations (``requant_node=False``).

Each requantisation is ``Mul(x, mul) -> Add(., add) -> Div(., Constant 2**D) -> Floor -> Clip(min, max)``
computing ``clip(floor((x*mul + add) / 2**D), lo, hi)``: the floor form of F2T's `add` is written as
is (DORY has no implicit half), `mul` times k after an average pool of k values. Annotations, as
QuantLib's ``annotate_onnx`` adds them (INT attributes): ``weight_bits = int(log2(n_levels + 1.2))``
and ``bias_bits = 32`` on Conv/Gemm, ``mult_bits = 32`` on Mul, ``add_bits = 32`` on Add,
``out_bits = round(log2(max - min + 1))`` (32 if more than 8) on Clip. The side JSON
(``config_<name>.json``) carries ``input_bits``, ``input_signed`` and our ``input_eps``.

The annotations are not in the ONNX schemas, so onnx.checker and onnxruntime reject the annotated
file ("Unrecognized attribute"), as they reject QuantLab's own DORY files; `strip_annotations`
gives the same graph without them, which both accept.
"""

from __future__ import annotations

import copy
import math

import onnx
from onnx import TensorProto, helper

from qlspec.export.integer_net import IntegerNet, Layer
from qlspec.export.onnx_graph import OnnxBuilder, build_model, requant_shape

ANNOTATIONS = ("weight_bits", "bias_bits", "mult_bits", "add_bits", "out_bits")
REQUANT_BITS = 32  # QuantLib's annotate_onnx default


def to_onnx(net: IntegerNet) -> onnx.ModelProto:
    """The DORY-flavour ONNX model of `net` (annotated)."""

    def requant(b: OnnxBuilder, layer: Layer, x: str, y: str, ndim: int) -> None:
        a = layer.attrs
        src = layer.source
        mul = b.const(f"{src}.mul", requant_shape(layer.consts["mul"] * int(a["mean_k"]), ndim))
        add = b.const(f"{src}.add", requant_shape(layer.consts["add"], ndim))
        t1, t2, t3, t4 = (b.tmp(f"{src}.{s}") for s in ("mul_out", "add_out", "div_const", "div_out"))
        b.node("Mul", [x, mul], [t1], mult_bits=REQUANT_BITS)
        b.node("Add", [t1, add], [t2], add_bits=REQUANT_BITS)
        b.node("Constant", [], [t3], value=helper.make_tensor(t3, TensorProto.FLOAT, [], [float(a["div"])]))
        b.node("Div", [t2, t3], [t4])
        t5 = b.tmp(f"{src}.floor_out")
        b.node("Floor", [t4], [t5])
        lo, hi = int(a["lo"]), int(a["hi"])
        out_bits = round(math.log2(hi - lo + 1))
        b.node("Clip", [t5], [y], min=float(lo), max=float(hi), out_bits=out_bits if out_bits <= 8 else 32)

    def annotate(node: onnx.NodeProto, layer: Layer) -> None:
        node.attribute.extend([helper.make_attribute("weight_bits", int(math.log2(layer.attrs.get("weight_levels", 256) + 1.2))),
                               helper.make_attribute("bias_bits", 32)])

    return build_model(net, requant, annotate, graph_name="qlspec_dory")


def strip_annotations(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` without DORY's annotation attributes (for onnx.checker and onnxruntime)."""
    m = copy.deepcopy(model)
    for n in m.graph.node:
        keep = [a for a in n.attribute if a.name not in ANNOTATIONS]
        del n.attribute[:]
        n.attribute.extend(keep)
    return m


def side_config(net: IntegerNet, onnx_file: str) -> dict:
    """DORY's ``config_<name>.json`` plus the input eps (which the ONNX file does not carry)."""
    return {"BNRelu_bits": REQUANT_BITS, "onnx_file": onnx_file, "code reserved space": 0, "n_inputs": 1,
            "input_bits": net.input.bits, "input_signed": bool(net.input.signed), "input_eps": float(net.input.eps),
            "input_rounding": net.input_rounding}
