"""What both QuantLab ONNX flavours share: the layers other than requantisation, written as QuantLib does.

Every tensor is float32 holding integers (activations, weights, biases, mul/add), opset 10, IR
version 5, graph input ``input`` and output ``output``; the batch axis is symbolic (``N``) so the
file runs on any number of images. Layers (see `qlspec.export.integer_net`):

- ``Conv`` -> ONNX ``Conv`` (``pads`` symmetric), no bias except on the network's last layer (F2T
  folds intermediate biases into the requantisation, as QuantLib's MergeConvBNPass does);
- ``Gemm`` -> ``Gemm(transB=1, alpha=1, beta=1)``, always with a bias (zeros when F2T folded it:
  QuantLib's ``integerize_pact_linear_fun`` does the same "to avoid MatMul");
- ``SumPool`` -> ``GlobalAveragePool`` / ``AveragePool`` (a mean: the requantiser after it
  carries ``mul * k``, QuantLab's AlignAvgPoolPass form, so ``mean * mul*k == sum * mul``);
- ``MaxPool`` -> ``MaxPool``; ``Flatten`` -> ``Flatten(axis=1)``;
- ``RequantShift`` -> the flavour's spelling (`qlspec.export.deeploy` / `qlspec.export.dory`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qlspec.errors import ExportError
from qlspec.export.integer_net import IntegerNet, Layer

OPSET = 10
IR_VERSION = 5
INPUT, OUTPUT = "input", "output"


@dataclass
class OnnxBuilder:
    """Collects nodes, float32 initializers and value infos for one model."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    value_info: list[onnx.ValueInfoProto] = field(default_factory=list)
    counter: int = 0

    def const(self, name: str, value: np.ndarray) -> str:
        """A float32 initializer holding the integers `value` exactly (checked)."""
        v = np.asarray(value)
        f = v.astype(np.float32)
        if not np.array_equal(f.astype(np.float64), v.astype(np.float64)):
            raise ExportError(f"constant {name!r} holds integers float32 cannot represent exactly", where="export")
        self.initializers.append(numpy_helper.from_array(f, name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], *, domain: str = "", **attrs) -> onnx.NodeProto:
        n = helper.make_node(op, inputs, outputs, name=f"{op}_{self.counter}", domain=domain or None, **attrs)
        if not domain:
            n.ClearField("domain")
        self.counter += 1
        self.nodes.append(n)
        return n

    def tmp(self, base: str) -> str:
        return f"{base}_{self.counter}"


def shape_with_batch(shape: tuple[int, ...]) -> list[int | str]:
    return ["N", *shape[1:]]


def build_model(net: IntegerNet, requant: Callable[[OnnxBuilder, Layer, str, str, int], None],
                annotate: Callable[[onnx.NodeProto, Layer], None] | None = None,
                opsets: dict[str, int] | None = None, graph_name: str = "qlspec") -> onnx.ModelProto:
    """The ONNX model of `net`; `requant(builder, layer, x, y, ndim)` writes one RequantShift from
    tensor x to y; `annotate(node, layer)` may add attributes to each Conv/Gemm node."""
    b = OnnxBuilder()
    tensors = net.tensors()
    names = {net.input.name: INPUT}
    last = net.layers[-1].output.name if net.layers else None
    for i, layer in enumerate(net.layers):
        x = names[layer.input]
        y = OUTPUT if layer.output.name == last else layer.output.name
        names[layer.output.name] = y
        ndim = len(tensors[layer.input].shape)
        src = layer.source or f"layer{i}"
        a = layer.attrs
        if layer.op == "Conv":
            ins = [x, b.const(f"{src}.weight", layer.consts["weight"])]
            if "bias" in layer.consts:
                ins.append(b.const(f"{src}.bias", layer.consts["bias"]))
            kh, kw = layer.consts["weight"].shape[2:]
            n = b.node("Conv", ins, [y], dilations=list(a["dilation"]), group=int(a["groups"]), kernel_shape=[kh, kw],
                       pads=[a["padding"][0], a["padding"][1], a["padding"][0], a["padding"][1]], strides=list(a["stride"]))
            if annotate:
                annotate(n, layer)
        elif layer.op == "Gemm":
            w = layer.consts["weight"]
            bias = layer.consts.get("bias", np.zeros(w.shape[0], np.int64))
            n = b.node("Gemm", [x, b.const(f"{src}.weight", w), b.const(f"{src}.bias", bias)], [y], alpha=1.0, beta=1.0, transB=1)
            if annotate:
                annotate(n, layer)
        elif layer.op == "RequantShift":
            requant(b, layer, x, y, ndim)
        elif layer.op == "SumPool":
            if a["global_"]:
                b.node("GlobalAveragePool", [x], [y])
            else:
                pads = [a["padding"][0], a["padding"][1], a["padding"][0], a["padding"][1]]
                kw = {"count_include_pad": 1} if any(pads) else {}
                b.node("AveragePool", [x], [y], kernel_shape=list(a["kernel"]), strides=list(a["stride"]), pads=pads, **kw)
        elif layer.op == "MaxPool":
            p = a["padding"]
            b.node("MaxPool", [x], [y], kernel_shape=list(a["kernel"]), strides=list(a["stride"]), pads=[p[0], p[1], p[0], p[1]],
                   dilations=list(a["dilation"]), ceil_mode=int(a["ceil_mode"]))
        elif layer.op == "Flatten":
            b.node("Flatten", [x], [y], axis=1)
        else:
            raise ExportError(f"layer op {layer.op!r} has no ONNX form", where=src)
        if y != OUTPUT:
            b.value_info.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, shape_with_batch(layer.output.shape)))
    graph = helper.make_graph(
        b.nodes, graph_name,
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, shape_with_batch(net.input.shape))],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, shape_with_batch(net.output.shape))],
        initializer=b.initializers, value_info=b.value_info,
    )
    imports = [helper.make_opsetid(d, v) for d, v in {"": OPSET, **(opsets or {})}.items()]
    model = helper.make_model(graph, opset_imports=imports, producer_name="qlspec", ir_version=IR_VERSION)
    return model


def requant_shape(values: np.ndarray, ndim: int) -> np.ndarray:
    """mul/add as QuantLib stores them: ``()`` per tensor, ``(C,1,1)`` per channel of NCHW, ``(C,)`` of (N, C)."""
    v = np.asarray(values)
    if v.ndim == 0:
        return v
    return v.reshape((-1,) + (1,) * (ndim - 2))
