"""Deeploy flavour: QuantLib's ``RequantShift(x, mul, add)`` custom node (``requant_node=True``).

Each `RequantShift` of the graph is one node ``RequantShift(x, mul, add)`` with TENSOR attributes,
as QuantLib's ``symbolic()`` writes them: ``div`` (scalar float32 ``2**D``), ``n_levels_out``
(``[n]``) and ``signed`` (``[1.0]`` / ``[0.0]``). Its meaning in Deeploy (whose kernels add
``div/2``), in the IR and in qlspec's importer is the same:
``y = clip(floor((x*mul + add + div/2) / div), lo, hi)``, so `mul` and `add` are written as the graph
holds them (``mul * k`` after an average pool of k values, see `qlspec.export.onnx_graph`). The
opset imports declare ``""`` v10 and ``PACTOps`` v1; the RequantShift nodes are in domain
``PACTOps`` by default (as a raw PyTorch export has them; QuantLab's onnxruntime-optimised files
leave them in ``""``: pass ``node_domain=""`` for that spelling). `mul` and `add` are INT32
initialisers, as in Deeploy's own test networks and its int32 kernels (the importer reads both
spellings), unless a fixed ``requant_bits`` made them exceed int32: then float32, as QuantLab's
exports hold them. Weights stay float32 as QuantLab writes them.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from qlspec.errors import ExportError
from qlspec.export.onnx_graph import COMMON, OnnxBuilder, build_model, pool_k
from qlspec.graph.ir import Graph, Node, levels_range

CUSTOM_DOMAIN = "PACTOps"


def levels_of(n: Node) -> tuple[int, bool]:
    """(n_levels, signed) of a requantiser's output range, which must be QuantLib's for some n."""
    lo, hi = int(n.attr("lo")), int(n.attr("hi"))
    signed = lo < 0
    levels = hi - lo + 1
    if levels_range(levels, signed) != (lo, hi):
        raise ExportError(f"output range [{lo}, {hi}] is no QuantLib level range ([0, n-1] or [-n/2, n/2-1])", where=n.where())
    return levels, signed


def requant_shift_rule(node_domain: str = CUSTOM_DOMAIN):
    def rule(b: OnnxBuilder, n: Node) -> None:
        x, mul, add = n.inputs
        k = pool_k(b.g, x)
        levels, signed = levels_of(n)
        m, a = b.g.constants[mul].astype(np.int64) * k, b.g.constants[add].astype(np.int64)
        dtype = np.int32 if max(np.abs(m).max(initial=0), np.abs(a).max(initial=0)) <= np.iinfo(np.int32).max else np.float32
        b.node(
            "RequantShift",
            [x, b.const(f"{mul}*{k}" if k > 1 else mul, m, dtype=dtype), b.const(add, a, dtype=dtype)],
            list(n.outputs),
            name=n.name,
            domain=node_domain,
            div=helper.make_tensor("div", TensorProto.FLOAT, [], [float(n.attr("div"))]),
            n_levels_out=helper.make_tensor("n_levels_out", TensorProto.FLOAT, [1], [float(levels)]),
            signed=helper.make_tensor("signed", TensorProto.FLOAT, [1], [1.0 if signed else 0.0]),
        )

    return rule


RULES = {**COMMON, "RequantShift": requant_shift_rule()}


def to_onnx(g: Graph, *, node_domain: str = CUSTOM_DOMAIN) -> onnx.ModelProto:
    """The Deeploy-flavour ONNX model of the integer graph `g`."""
    rules = RULES if node_domain == CUSTOM_DOMAIN else {**RULES, "RequantShift": requant_shift_rule(node_domain)}
    return build_model(g, rules, flavour="deeploy", opsets={CUSTOM_DOMAIN: 1})
