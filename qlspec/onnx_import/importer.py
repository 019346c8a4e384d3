"""The import driver: walks the ONNX graph in topological order and lowers each node to IR nodes.

Lowering rules live in `standard.py` (plain ONNX ops), `deeploy.py` (RequantShift) and `dory.py`
(the Mul -> Add -> Div -> Floor requantisation chain and the annotated residual Add). A rule may
consume several ONNX nodes at once (`Importer.consume`). Every failure is an `OnnxImportError`
naming the file, the node and its op type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NoReturn

import numpy as np
import onnx
from onnx import TensorProto

from qlspec.errors import GraphError, OnnxImportError
from qlspec.graph.ir import Graph, GraphBuilder, Node, TensorInfo, narrow
from qlspec.onnx_import.reader import Attributes, integral, tensor_value, unique_attributes

# ONNX element type -> (bits, signed) of an integer graph input; float inputs carry integers too
_ELEM_TYPES = {
    TensorProto.INT8: (8, True),
    TensorProto.UINT8: (8, False),
    TensorProto.INT16: (16, True),
    TensorProto.UINT16: (16, False),
    TensorProto.INT32: (32, True),
    TensorProto.INT64: (64, True),
}
DEFAULT_INPUT = (32, True)
# where QuantLab exports put their custom RequantShift: a raw PyTorch export, onnxruntime-extensions' domain
CUSTOM_DOMAINS = ("PACTOps", "ai.onnx.contrib")  # the ONNX file carries no input precision: accept any int32 value

Lowering = Callable[["Importer", onnx.NodeProto], None]


class Importer:
    def __init__(
        self, path: Path, model: onnx.ModelProto, rules: Mapping[str, Lowering], input_types: Mapping[str, tuple[int, bool]] | None
    ) -> None:
        self.path = path
        self.model = model
        self.graph = model.graph
        self.rules = rules
        self.opset = {o.domain or "": o.version for o in model.opset_import}.get("", 13)
        self.raw_consts: dict[str, np.ndarray] = {}
        for i in self.graph.initializer:
            try:
                self.raw_consts[i.name] = tensor_value(i, f"initializer {i.name[:80]!r}", path.parent)
            except ValueError as e:
                self.fail(None, str(e))
        self.builder = GraphBuilder(self.graph.name or path.stem)
        self.alias: dict[str, str] = {}
        self.pending_divisor: dict[str, tuple[int, onnx.NodeProto]] = {}
        self.consumed: set[int] = set()
        self.ir_consts: dict[str, str] = {}
        self.declared = self._declared_shapes()
        self.uses: dict[str, list[onnx.NodeProto]] = {}
        for n in self.graph.node:
            for t in n.input:
                if t:
                    self.uses.setdefault(t, []).append(n)
        self._add_inputs(input_types or {})

    # -- locations and errors ------------------------------------------------------------------
    def where(self, node: onnx.NodeProto | None = None) -> str:
        if node is None:
            return self.path.name
        return f"{self.path.name}: node {node.name or '<unnamed>'} ({node.op_type})"

    def fail(self, node: onnx.NodeProto | None, message: str) -> NoReturn:
        raise OnnxImportError(message, where=self.where(node))

    def attributes(self, node: onnx.NodeProto) -> Attributes:
        return Attributes(node, lambda msg: self.fail(node, msg))

    # -- setup ---------------------------------------------------------------------------------
    def _declared_shapes(self) -> dict[str, tuple[int | None, ...]]:
        shapes = {}
        for vi in list(self.graph.value_info) + list(self.graph.output):
            t = vi.type.tensor_type
            if t.HasField("shape"):
                shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim)
        return shapes

    def _add_inputs(self, input_types: Mapping[str, tuple[int, bool]]) -> None:
        for vi in self.graph.input:
            if vi.name in self.raw_consts:
                continue  # an initializer listed as input (keep_initializers_as_inputs): a constant
            t = vi.type.tensor_type
            if not t.HasField("shape"):
                self.fail(None, f"graph input {vi.name!r} has no shape")
            dims = []
            for i, d in enumerate(t.shape.dim):
                if d.HasField("dim_value") and d.dim_value > 0:
                    dims.append(d.dim_value)
                elif i == 0:
                    dims.append(1)  # a symbolic batch axis: declare 1, the engine runs any batch
                else:
                    self.fail(None, f"graph input {vi.name!r} has a symbolic dimension {i} ({d.dim_param!r})")
            if vi.name in input_types:
                bits, signed = input_types[vi.name]
            elif t.elem_type in _ELEM_TYPES:
                bits, signed = _ELEM_TYPES[t.elem_type]
            elif t.elem_type in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16):
                bits, signed = DEFAULT_INPUT
            else:
                self.fail(None, f"graph input {vi.name!r} has unsupported element type {TensorProto.DataType.Name(t.elem_type)}")
            self.builder.add_input(vi.name, TensorInfo(tuple(dims), bits, signed))

    # -- tensors -------------------------------------------------------------------------------
    def const_value(self, name: str) -> np.ndarray | None:
        """The raw value of an initializer or Constant output (None for an activation)."""
        return self.raw_consts.get(self.alias.get(name, name))

    def int_const(self, node: onnx.NodeProto, name: str) -> str:
        """The IR constant for an ONNX constant holding integers (stored in float32 or not)."""
        name = self.alias.get(name, name)
        if name in self.ir_consts:
            return self.ir_consts[name]
        raw = self.raw_consts.get(name)
        if raw is None:
            self.fail(node, f"input {name!r} must be a constant (an initializer or a Constant node)")
        try:
            value = narrow(integral(raw, f"constant {name!r}"))
        except ValueError as e:
            self.fail(node, str(e))
        self.builder.add_constant(name, value)
        self.ir_consts[name] = name
        return name

    def int_value(self, node: onnx.NodeProto, name: str) -> np.ndarray:
        return self.builder.constants[self.int_const(node, name)]

    def tensor(self, node: onnx.NodeProto, name: str) -> str:
        """The IR tensor for an ONNX input name (constants become integer IR constants)."""
        name = self.alias.get(name, name)
        if name in self.pending_divisor:
            self.fail(
                node,
                f"consumes {name!r}, the output of an average pool, which must go straight into a requantisation (sum then requantise)",
            )
        if name in self.raw_consts:
            return self.int_const(node, name)
        if name not in self.builder.tensors:
            self.fail(node, f"input {name!r} is not defined by any earlier node, input or initializer")
        return name

    def info(self, name: str) -> TensorInfo:
        return self.builder.tensors[self.alias.get(name, name)]

    def take_divisor(self, name: str) -> int:
        """For a requantiser reading `name`: the pending average-pool divisor k (1 if none)."""
        name = self.alias.get(name, name)
        k, _ = self.pending_divisor.pop(name, (1, None))
        return k

    def single_consumer(self, tensor: str) -> onnx.NodeProto | None:
        uses = self.uses.get(tensor, [])
        if len(uses) != 1 or tensor in {o.name for o in self.graph.output}:
            return None
        return uses[0]

    def consume(self, *nodes: onnx.NodeProto) -> None:
        self.consumed.update(id(n) for n in nodes)

    # -- emitting ------------------------------------------------------------------------------
    def emit(self, onnx_node: onnx.NodeProto, node: Node) -> TensorInfo:
        try:
            (info,) = self.builder.add_node(node)
        except GraphError as e:
            self.fail(onnx_node, e.message)
        (out,) = node.outputs
        declared = self.declared.get(out)
        if declared is not None and (
            len(declared) != len(info.shape) or any(d is not None and d != s for d, s in zip(declared, info.shape))
        ):
            self.fail(onnx_node, f"shape mismatch: output {out!r} is declared {list(declared)} but computes to {list(info.shape)}")
        return info

    def node_name(self, node: onnx.NodeProto) -> str:
        base = node.name or f"{node.op_type}_{node.output[0]}"
        name, i = base, 1
        while any(n.name == name for n in self.builder.nodes):
            name, i = f"{base}_{i}", i + 1
        return name

    # -- driver --------------------------------------------------------------------------------
    def _ordered(self) -> list[onnx.NodeProto]:
        have = set(self.builder.tensors) | set(self.raw_consts) | {""}
        pending, done = list(self.graph.node), []
        while pending:
            rest = [n for n in pending if not all(t in have for t in n.input)]
            ready = [n for n in pending if all(t in have for t in n.input)]
            if not ready:
                n = rest[0]
                missing = [t for t in n.input if t not in have]
                self.fail(n, f"input(s) {missing} are never defined (or the graph has a cycle)")
            for n in ready:
                done.append(n)
                have.update(n.output)
            pending = rest
        return done

    def lower(self, rule: Lowering, node: onnx.NodeProto) -> None:
        """Apply `rule`; a node without the inputs or outputs its op needs is a located error."""
        unique_attributes(node, lambda message: self.fail(node, message))
        try:
            rule(self, node)
        except IndexError:
            self.fail(node, f"too few inputs ({len(node.input)}) or outputs ({len(node.output)}) for {node.op_type}")

    def run(self) -> Graph:
        ordered = self._ordered()
        for node in ordered:  # constants first: a chain rule looks ahead at its Div's divisor
            if node.op_type == "Constant" and (node.domain or "") == "":
                self.lower(self.rules["Constant"], node)
                self.consume(node)
        for node in ordered:
            if id(node) in self.consumed:
                continue
            domain = node.domain or ""
            rule = self.rules.get(node.op_type) if domain in ("", "ai.onnx", *CUSTOM_DOMAINS) else None
            if rule is None or (domain in CUSTOM_DOMAINS and node.op_type != "RequantShift"):
                supported = ", ".join(sorted(self.rules))
                self.fail(
                    node,
                    f"unsupported op {domain + '::' if domain else ''}{node.op_type} (supported: {supported}"
                    f"; from the custom domains {', '.join(CUSTOM_DOMAINS)} only RequantShift)",
                )
            self.lower(rule, node)
        for _, node in self.pending_divisor.values():
            self.fail(node, "average pool output must go straight into a requantisation (sum then requantise)")
        outputs = [o.name for o in self.graph.output]
        if not outputs:
            self.fail(None, "the graph declares no outputs")
        renames = {}
        for o in outputs:
            src = self.alias.get(o, o)
            if src not in self.builder.tensors:
                self.fail(None, f"graph output {o!r} is never computed")
            if src != o:
                if src in self.builder.inputs or src in self.builder.constants:
                    self.fail(None, f"graph output {o!r} is just the input or constant {src!r}")
                renames[src] = o
        try:
            g = self.builder.build([self.alias.get(o, o) for o in outputs])
            return g.rewrite(rename=renames) if renames else g
        except GraphError as e:
            raise OnnxImportError(e.message, where=f"{self.path.name}: {e.where}" if e.where else self.path.name) from None
