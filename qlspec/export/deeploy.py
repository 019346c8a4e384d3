"""Deeploy flavour: QuantLib's ``RequantShift(x, mul, add)`` custom node (``requant_node=True``).

Each requantisation is one node ``RequantShift(x, mul, add)`` with TENSOR attributes, as QuantLib's
``symbolic()`` writes them: ``div`` (scalar float32 ``2**D``), ``n_levels_out`` (``[n]``) and
``signed`` (``[1.0]`` / ``[0.0]``). Its meaning in Deeploy (whose kernels add ``div/2``) and in
qlspec's importer: ``y = clip(floor((x*mul + add + div/2) / div), lo, hi)``. F2T's floor-form `add`
is therefore written as ``add - div/2`` (and ``mul * k`` after an average pool of k values). The
opset imports declare ``""`` v10 and ``PACTOps`` v1; the RequantShift nodes are in domain
``PACTOps`` by default (as a raw PyTorch export has them; QuantLab's onnxruntime-optimised files
leave them in ``""``, pass ``node_domain=""`` for that spelling).
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from qlspec.export.integer_net import IntegerNet, Layer
from qlspec.export.onnx_graph import OnnxBuilder, build_model, requant_shape

CUSTOM_DOMAIN = "PACTOps"


def to_onnx(net: IntegerNet, *, node_domain: str = CUSTOM_DOMAIN) -> onnx.ModelProto:
    """The Deeploy-flavour ONNX model of `net`."""

    def requant(b: OnnxBuilder, layer: Layer, x: str, y: str, ndim: int) -> None:
        a = layer.attrs
        div = int(a["div"])
        src = layer.source
        mul = b.const(f"{src}.mul", requant_shape(layer.consts["mul"] * int(a["mean_k"]), ndim))
        add = b.const(f"{src}.add", requant_shape(layer.consts["add"] - div // 2, ndim))
        b.node("RequantShift", [x, mul, add], [y], domain=node_domain,
               div=helper.make_tensor("div", TensorProto.FLOAT, [], [float(div)]),
               n_levels_out=helper.make_tensor("n_levels_out", TensorProto.FLOAT, [1], [float(a["n_levels"])]),
               signed=helper.make_tensor("signed", TensorProto.FLOAT, [1], [1.0 if a["signed"] else 0.0]))

    return build_model(net, requant, opsets={CUSTOM_DOMAIN: 1}, graph_name="qlspec_deeploy")

