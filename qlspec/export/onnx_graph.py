"""Writing the qlspec `Graph` as QuantLab ONNX: one rule per IR op, the mirror of the importer's rules.

A flavour is a rule table `{op: rule}` (`COMMON` plus its own requantisation, see
`qlspec.export.deeploy` and `qlspec.export.dory`); `build_model` applies it to every node of the
integer graph (the graph after its input quantiser: F2T's `Integerised.integer_graph()`). Every
tensor is float32 holding integers (activations, weights, biases, mul/add), opset 10, IR version 5,
graph input ``input`` and output ``output``; the batch axis is symbolic (``N``) so the file runs on
any number of images. ONNX node names are the graph's node names, initializer names its constant
names. The rules QuantLib's export shares between flavours:

- ``Conv`` -> ONNX ``Conv`` (explicit ``pads``), a bias only where the graph has one;
- ``Gemm`` -> ``Gemm(transB=1, alpha=1, beta=1)`` with its bias (F2T gives every Gemm one, zeros
  where it folded the bias into the requantisation, as QuantLib's ``integerize_pact_linear_fun``);
- ``SumPool`` / ``GlobalSumPool`` -> ``AveragePool`` / ``GlobalAveragePool``: a *mean*, so the
  requantiser after it is written with ``mul * k`` (QuantLab's AlignAvgPoolPass form:
  ``mean * mul*k == sum * mul``), which is what the importer divides back;
- ``MaxPool`` -> ``MaxPool``; ``Flatten`` -> ``Flatten``;
- ``Add`` (a harmonised residual add: both inputs requantised onto one grid by their own
  RequantShift, then summed exactly) -> ``Add``. DORY's annotated Add (``in1_*``/``in2_*``/``out_*``)
  requantises its inputs *without* clipping them, which is not QuantLib's PACT add (its branch
  quantisers clip), so neither flavour fuses the branch requantisers into it;
- ``Concat`` (a harmonised concatenation: every input requantised onto one grid) -> ``Concat``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qlspec.errors import ExportError
from qlspec.graph.ir import Graph, Node

OPSET = 10
IR_VERSION = 5
INPUT, OUTPUT = "input", "output"
POOLS = ("SumPool", "GlobalSumPool")


@dataclass
class OnnxBuilder:
    """Collects nodes, float32 initializers and value infos for one model of graph `g`."""

    g: Graph
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: dict[str, onnx.TensorProto] = field(default_factory=dict)

    def const(self, name: str, value: np.ndarray | None = None, *, dtype: type = np.float32) -> str:
        """An initializer holding the integers `value` (default: the graph's constant `name`) exactly, as
        float32 (QuantLab's files) or `dtype` (np.int32: Deeploy's own files store requantisation
        constants so)."""
        v = np.asarray(self.g.constants[name] if value is None else value)
        f: np.ndarray = v.astype(dtype)
        if not np.array_equal(f.astype(np.float64), v.astype(np.float64)):
            raise ExportError(f"constant {name!r} holds integers {np.dtype(dtype).name} cannot represent exactly", where="export")
        if name not in self.initializers:
            self.initializers[name] = numpy_helper.from_array(f, name)
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], *, name: str, domain: str = "", **attrs) -> onnx.NodeProto:
        n = helper.make_node(op, inputs, outputs, name=name, domain=domain or None, **attrs)
        if not domain:
            n.ClearField("domain")
        self.nodes.append(n)
        return n


Rule = Callable[[OnnxBuilder, Node], None]


def pool_k(g: Graph, tensor: str) -> int:
    """k when `tensor` is the window sum of a pool of k values (written as a mean), else 1."""
    p = g.producer(tensor)
    if p is None or p.op not in POOLS:
        return 1
    if p.op == "GlobalSumPool":
        shape = g.info(p.inputs[0]).shape
        return int(shape[2] * shape[3])
    return int(math.prod(p.attr("kernel_shape")))


def _conv(b: OnnxBuilder, n: Node) -> None:
    x, w, *bias = n.inputs
    kh, kw = b.g.info(w).shape[2:]
    b.node(
        "Conv",
        [x, b.const(w), *(b.const(t) for t in bias if t)],
        list(n.outputs),
        name=n.name,
        dilations=list(n.attr("dilations")),
        group=int(n.attr("group")),
        kernel_shape=[kh, kw],
        pads=list(n.attr("pads")),
        strides=list(n.attr("strides")),
    )


def _gemm(b: OnnxBuilder, n: Node) -> None:
    if n.attr("trans_a") or not n.attr("trans_b") or len(n.inputs) != 3:
        raise ExportError("QuantLab files spell a linear layer as Gemm(x, W, bias) with transB=1", where=n.where())
    x, w, bias = n.inputs
    b.node("Gemm", [x, b.const(w), b.const(bias)], list(n.outputs), name=n.name, alpha=1.0, beta=1.0, transB=1)


def _sum_pool(b: OnnxBuilder, n: Node) -> None:
    pads = list(n.attr("pads"))
    extra: dict[str, Any] = {"count_include_pad": 1} if any(pads) else {}
    b.node(
        "AveragePool",
        list(n.inputs),
        list(n.outputs),
        name=n.name,
        kernel_shape=list(n.attr("kernel_shape")),
        strides=list(n.attr("strides")),
        pads=pads,
        **extra,
    )


def _global_sum_pool(b: OnnxBuilder, n: Node) -> None:
    b.node("GlobalAveragePool", list(n.inputs), list(n.outputs), name=n.name)


def _max_pool(b: OnnxBuilder, n: Node) -> None:
    b.node(
        "MaxPool",
        list(n.inputs),
        list(n.outputs),
        name=n.name,
        kernel_shape=list(n.attr("kernel_shape")),
        strides=list(n.attr("strides")),
        pads=list(n.attr("pads")),
        dilations=list(n.attr("dilations")),
        ceil_mode=int(n.attr("ceil_mode")),
    )


def _add(b: OnnxBuilder, n: Node) -> None:
    b.node("Add", list(n.inputs), list(n.outputs), name=n.name)


def _concat(b: OnnxBuilder, n: Node) -> None:
    b.node("Concat", list(n.inputs), list(n.outputs), name=n.name, axis=int(n.attr("axis")))


def _flatten(b: OnnxBuilder, n: Node) -> None:
    b.node("Flatten", list(n.inputs), list(n.outputs), name=n.name, axis=int(n.attr("axis")))


COMMON: dict[str, Rule] = {
    "Conv": _conv,
    "Gemm": _gemm,
    "SumPool": _sum_pool,
    "GlobalSumPool": _global_sum_pool,
    "MaxPool": _max_pool,
    "Flatten": _flatten,
    "Add": _add,
    "Concat": _concat,
}


def shape_with_batch(shape: tuple[int, ...]) -> list[int | str]:
    return ["N", *shape[1:]]


def build_model(g: Graph, rules: Mapping[str, Rule], *, flavour: str, opsets: dict[str, int] | None = None) -> onnx.ModelProto:
    """The ONNX model of the integer graph `g` (input ``input``, output ``output``) by `rules`."""
    if tuple(g.inputs) != (INPUT,) or tuple(g.outputs) != (OUTPUT,):
        raise ExportError(
            f"an exported graph takes {INPUT!r} and gives {OUTPUT!r} (got {list(g.inputs)} -> {list(g.outputs)})", where="export"
        )
    b = OnnxBuilder(g)
    value_info = []
    for n in g.nodes:
        rule = rules.get(n.op)
        if rule is None:
            raise ExportError(f"op {n.op} has no {flavour} ONNX form (supported: {', '.join(sorted(rules))})", where=n.where())
        rule(b, n)
        value_info += [
            helper.make_tensor_value_info(t, TensorProto.FLOAT, shape_with_batch(g.info(t).shape)) for t in n.outputs if t != OUTPUT
        ]
    graph = helper.make_graph(
        b.nodes,
        f"qlspec_{flavour}",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, shape_with_batch(g.info(INPUT).shape))],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, shape_with_batch(g.info(OUTPUT).shape))],
        initializer=list(b.initializers.values()),
        value_info=value_info,
    )
    imports = [helper.make_opsetid(d, v) for d, v in {"": OPSET, **(opsets or {})}.items()]
    return helper.make_model(graph, opset_imports=imports, producer_name="qlspec", ir_version=IR_VERSION)
