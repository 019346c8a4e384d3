"""The qlspec graph: an immutable, typed, versioned integer dataflow graph (the LPDNN-style IR).

A `Graph` is a list of `Node`s in topological order over named tensors. Every tensor has a
`TensorInfo` (shape, bit-width, signedness); graph inputs and node outputs are activations,
`constants` hold the weights and requantisation parameters as integer numpy arrays.

The meaning of each node is its op's docstring in `qlspec.engine.ops` (one module per op): the IR
has no other specification. Output types are never stored by hand: `make_graph` infers them by
asking each op, so a rewritten graph is always consistent. Graphs are values: passes build new
ones with `Graph.rewrite` and never mutate.

`IR_VERSION` changes when the meaning of an existing op changes; a changed op gets a new name
(``RequantShift_2`` beside ``RequantShift``), as ONNX does with ``Clip_11``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

import numpy as np

from qlspec.errors import GraphError

IR_VERSION = 1

AttrValue = int | float | str | bool | tuple


def bits_for_range(lo: int, hi: int) -> tuple[int, bool]:
    """Smallest (bits, signed) whose two's-complement or unsigned range holds [lo, hi]."""
    if lo > hi:
        raise GraphError(f"empty integer range [{lo}, {hi}]")
    if lo < 0:
        bits = max(int(-lo - 1).bit_length(), int(hi).bit_length()) + 1
        return bits, True
    return max(int(hi).bit_length(), 1), False


def narrow(a: np.ndarray) -> np.ndarray:
    """Integers `a` in the smallest signed container of 8, 16, 32 or 64 bits that holds every value
    (how constants are stored, whoever builds the graph: F2T or the ONNX importer)."""
    a = np.asarray(a)
    lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
    for dt in (np.int8, np.int16, np.int32, np.int64):
        if np.iinfo(dt).min <= lo and hi <= np.iinfo(dt).max:
            return a.astype(dt)
    raise ValueError("values exceed int64")


def levels_range(n_levels: int, signed: bool) -> tuple[int, int]:
    """QuantLib's output range for `n_levels`: [0, n-1] unsigned, [-c, c-1] signed.

    c = round(n/2) with half to even, exactly as `RequantShift.forward` in QuantLib
    (``c = round(n_levels_out/2)``); for the usual even n this is n/2 (256 -> [-128, 127]).
    """
    if n_levels < 2:
        raise GraphError(f"n_levels must be >= 2 (got {n_levels})")
    if not signed:
        return 0, n_levels - 1
    c = n_levels // 2 if n_levels % 2 == 0 else (n_levels // 2 + (n_levels // 2) % 2)
    return -c, c - 1


@dataclass(frozen=True)
class TensorInfo:
    """Type of one tensor: shape (NCHW logical layout), bit-width and signedness.

    An integer tensor holds values in [lo, hi] = [-2^(bits-1), 2^(bits-1)-1] when signed, else
    [0, 2^bits - 1]; it is stored in the smallest numpy container of 8, 16, 32 or 64 bits
    (`dtype`). A 4-bit tensor is therefore held in int8/uint8 but its range is 4 bits.
    `is_float` marks float32 tensors (only the input of a `Quantise`).
    """

    shape: tuple[int, ...]
    bits: int
    signed: bool
    is_float: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if any(d < 0 for d in self.shape):
            raise GraphError(f"negative dimension in shape {self.shape}")
        if self.is_float:
            if (self.bits, self.signed) != (32, True):
                raise GraphError("float tensors are float32 (bits=32, signed=True)")
        elif not 1 <= self.bits <= (64 if self.signed else 63):
            raise GraphError(f"unsupported integer width {self.bits} bits (signed={self.signed})")

    @classmethod
    def for_range(cls, shape: Sequence[int], lo: int, hi: int) -> TensorInfo:
        bits, signed = bits_for_range(lo, hi)
        return cls(tuple(shape), bits, signed)

    @classmethod
    def of_array(cls, a: np.ndarray) -> TensorInfo:
        """The type of a constant: its numpy container, at full width."""
        if a.dtype == np.float32:
            return cls(a.shape, 32, True, is_float=True)
        if a.dtype.kind not in "iu" or a.dtype == np.uint64:
            raise GraphError(f"constants must be integer arrays (got {a.dtype})")
        return cls(a.shape, a.dtype.itemsize * 8, a.dtype.kind == "i")

    @property
    def lo(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def hi(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def dtype(self) -> np.dtype:
        if self.is_float:
            return np.dtype(np.float32)
        width = next(w for w in (8, 16, 32, 64) if self.bits <= w)
        return np.dtype(f"{'int' if self.signed else 'uint'}{width}")

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def describe(self) -> str:
        kind = "float32" if self.is_float else f"{'i' if self.signed else 'u'}{self.bits}"
        return f"{kind}[{'x'.join(map(str, self.shape))}]"


def _freeze_attr(value: Any) -> AttrValue:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(_freeze_attr(v) for v in value)
    raise GraphError(f"unsupported attribute value {value!r} ({type(value).__name__})")


@dataclass(frozen=True)
class Node:
    """One operation: `op` names a class in `qlspec.engine.ops`; "" in `inputs` is an absent optional input."""

    op: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: tuple[tuple[str, AttrValue], ...] = ()

    @classmethod
    def make(cls, op: str, name: str, inputs: Iterable[str], outputs: Iterable[str], **attrs: Any) -> Node:
        frozen = tuple(sorted((k, _freeze_attr(v)) for k, v in attrs.items()))
        return cls(op, name, tuple(inputs), tuple(outputs), frozen)

    @property
    def attr_dict(self) -> dict[str, AttrValue]:
        return dict(self.attrs)

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attr_dict.get(key, default)

    def with_attrs(self, **changes: Any) -> Node:
        return Node.make(self.op, self.name, self.inputs, self.outputs, **{**self.attr_dict, **changes})

    def where(self) -> str:
        return f"node {self.name} ({self.op})"


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Graph:
    """An immutable integer graph. Build with `make_graph`; derive new graphs with `rewrite`."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    nodes: tuple[Node, ...]
    tensors: Mapping[str, TensorInfo]
    constants: Mapping[str, np.ndarray]
    ir_version: int = IR_VERSION

    # -- queries ------------------------------------------------------------------------------
    @cached_property
    def _producers(self) -> dict[str, Node]:
        return {t: n for n in self.nodes for t in n.outputs}

    @cached_property
    def _consumers(self) -> dict[str, list[Node]]:
        uses: dict[str, list[Node]] = {}
        for n in self.nodes:
            for t in dict.fromkeys(n.inputs):
                if t:
                    uses.setdefault(t, []).append(n)
        return uses

    def producer(self, tensor: str) -> Node | None:
        return self._producers.get(tensor)

    def consumers(self, tensor: str) -> list[Node]:
        return list(self._consumers.get(tensor, ()))

    def is_constant(self, tensor: str) -> bool:
        return tensor in self.constants

    def info(self, tensor: str) -> TensorInfo:
        return self.tensors[tensor]

    def activations(self) -> list[str]:
        """Graph inputs and node outputs, in definition order (what the memory plan places)."""
        return list(self.inputs) + [t for n in self.nodes for t in n.outputs]

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op] = counts.get(n.op, 0) + 1
        return counts

    # -- derivation ---------------------------------------------------------------------------
    def rewrite(
        self,
        *,
        remove: Iterable[Node] = (),
        add: Iterable[Node] = (),
        constants: Mapping[str, np.ndarray] | None = None,
        drop_constants: Iterable[str] = (),
        rename: Mapping[str, str] | None = None,
    ) -> Graph:
        """A new graph: `remove` nodes, insert `add` nodes where the first removed one stood
        (the result is re-sorted topologically anyway), add or drop constants, and rename tensors
        (every use and definition; graph inputs cannot be renamed). Types are re-inferred."""
        removed = set(remove)
        new_nodes = list(add)
        nodes: list[Node] = []
        placed = False
        for n in self.nodes:
            if n in removed:
                if not placed:
                    nodes.extend(new_nodes)
                    placed = True
                continue
            nodes.append(n)
        if not placed:
            nodes.extend(new_nodes)
        consts = {k: v for k, v in self.constants.items() if k not in set(drop_constants)}
        consts.update(constants or {})
        outputs = list(self.outputs)
        if rename:
            if set(rename) & set(self.inputs):
                raise GraphError(f"cannot rename graph inputs {sorted(set(rename) & set(self.inputs))}")
            r = lambda t: rename.get(t, t)  # noqa: E731
            nodes = [Node(n.op, n.name, tuple(map(r, n.inputs)), tuple(map(r, n.outputs)), n.attrs) for n in nodes]
            outputs = [r(t) for t in outputs]
            consts = {r(k): v for k, v in consts.items()}
        inputs = {t: self.tensors[t] for t in self.inputs}
        return make_graph(self.name, inputs, nodes, consts, outputs)

    def bypass(self, node: Node) -> Graph | None:
        """Remove a one-input one-output node by wiring its input straight to its consumers.

        When the node's output is a graph output, its input tensor takes the output's name
        instead; that is impossible (None) when the input is a graph input, a constant or
        itself a graph output."""
        (src,) = [t for t in node.inputs[:1]]
        (dst,) = node.outputs
        if dst in self.outputs:
            if src in self.inputs or src in self.constants or src in self.outputs:
                return None
            return self.rewrite(remove=[node], rename={src: dst})
        return self.rewrite(remove=[node], rename={dst: src})

    # -- value semantics ----------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        same = (self.name, self.inputs, self.outputs, self.nodes, dict(self.tensors), self.ir_version) == (
            other.name,
            other.inputs,
            other.outputs,
            other.nodes,
            dict(other.tensors),
            other.ir_version,
        )
        return (
            same
            and self.constants.keys() == other.constants.keys()
            and all(
                self.constants[k].dtype == other.constants[k].dtype and np.array_equal(self.constants[k], other.constants[k])
                for k in self.constants
            )
        )

    __hash__ = None  # type: ignore[assignment]


def _toposort(nodes: Sequence[Node], available: set[str]) -> list[Node]:
    """Stable Kahn sort: keeps the given order wherever dependencies allow."""
    pending = list(nodes)
    done: list[Node] = []
    have = set(available)
    while pending:
        progressed = False
        rest = []
        for n in pending:
            if all(t == "" or t in have for t in n.inputs):
                done.append(n)
                have.update(n.outputs)
                progressed = True
            else:
                rest.append(n)
        if not progressed:
            n = rest[0]
            missing = [t for t in n.inputs if t and t not in have]
            raise GraphError(f"input(s) {missing} are never defined (or form a cycle)", where=n.where())
        pending = rest
    return done


def make_graph(
    name: str,
    inputs: Mapping[str, TensorInfo],
    nodes: Iterable[Node],
    constants: Mapping[str, np.ndarray],
    outputs: Sequence[str],
) -> Graph:
    """Validate, sort topologically and type a graph. Raises `GraphError` naming the node at fault."""
    from qlspec.engine.ops import op_for  # the ops define the IR's semantics, hence its types

    nodes = list(nodes)
    tensors: dict[str, TensorInfo] = dict(inputs)
    consts = {k: _readonly(v) for k, v in constants.items()}
    for k, v in consts.items():
        if k in tensors:
            raise GraphError(f"tensor {k!r} is both a graph input and a constant")
        tensors[k] = TensorInfo.of_array(v)
    names: set[str] = set()
    for n in nodes:
        if n.name in names:
            raise GraphError("duplicate node name", where=n.where())
        names.add(n.name)
        for t in n.outputs:
            if t in tensors or not t:
                raise GraphError(f"tensor {t!r} is defined twice", where=n.where())
            tensors[t] = TensorInfo((), 1, False)  # placeholder until inferred below
    ordered = _toposort(nodes, set(inputs) | set(consts))
    for n in ordered:
        op = op_for(n)
        ins = [tensors[t] if t else None for t in n.inputs]
        vals = [consts.get(t) if t else None for t in n.inputs]
        out_infos = op.checked_infer(n, ins, vals)
        if len(out_infos) != len(n.outputs):
            raise GraphError(f"op has {len(out_infos)} output(s), node lists {len(n.outputs)}", where=n.where())
        for t, info in zip(n.outputs, out_infos):
            tensors[t] = info
    if not outputs:
        raise GraphError("the graph has no outputs (nothing it computes would be returned)")
    for t in outputs:
        if t not in tensors:
            raise GraphError(f"graph output {t!r} is never defined")
    return Graph(
        name=name,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        nodes=tuple(ordered),
        tensors=MappingProxyType(tensors),
        constants=MappingProxyType(consts),
    )


@dataclass
class GraphBuilder:
    """Mutable helper for importers: add nodes one at a time, each typed as it is added."""

    name: str
    inputs: dict[str, TensorInfo] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    tensors: dict[str, TensorInfo] = field(default_factory=dict)

    def add_input(self, name: str, info: TensorInfo) -> None:
        self.inputs[name] = info
        self.tensors[name] = info

    def add_constant(self, name: str, value: np.ndarray) -> str:
        self.constants[name] = _readonly(value)
        self.tensors[name] = TensorInfo.of_array(self.constants[name])
        return name

    def add_node(self, node: Node) -> tuple[TensorInfo, ...]:
        from qlspec.engine.ops import op_for

        missing = [t for t in node.inputs if t and t not in self.tensors]
        if missing:
            raise GraphError(f"input(s) {missing} are not defined yet", where=node.where())
        ins = [self.tensors[t] if t else None for t in node.inputs]
        vals = [self.constants.get(t) if t else None for t in node.inputs]
        infos = op_for(node).checked_infer(node, ins, vals)
        self.nodes.append(node)
        for t, info in zip(node.outputs, infos):
            self.tensors[t] = info
        return infos

    def build(self, outputs: Sequence[str]) -> Graph:
        return make_graph(self.name, self.inputs, self.nodes, self.constants, outputs)
