"""The contract every IR op class follows.

An op is a frozen dataclass whose fields are its node's attributes. `infer` gives the output
types from the input types (and the values of constant inputs), `run` computes the output with
numpy on integer arrays. Each subclass's docstring is the exact arithmetic, which every backend
must reproduce bit for bit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from qlspec.errors import GraphError
from qlspec.graph.ir import Node, TensorInfo

INT64_LIMIT = 1 << 63


@dataclass(frozen=True)
class Op:
    op_type: ClassVar[str]
    n_inputs: ClassVar[tuple[int, int]] = (1, 1)  # (required, maximum)
    optional: ClassVar[tuple[int, ...]] = ()  # input positions that may be absent ("")
    clips_output: ClassVar[bool] = False  # has `lo`/`hi` fields that clip its result

    @classmethod
    def from_node(cls, node: Node) -> Op:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(node.attr_dict) - known)
        if unknown:
            raise GraphError(f"unknown attribute(s) {unknown} (supported: {sorted(known)})", where=node.where())
        try:
            return cls(**node.attr_dict)
        except (TypeError, ValueError) as e:
            raise GraphError(str(e), where=node.where()) from None

    def checked_infer(self, node: Node, ins: Sequence[TensorInfo | None], vals: Sequence[np.ndarray | None]) -> tuple[TensorInfo, ...]:
        lo, hi = self.n_inputs
        present = len(node.inputs)
        if not lo <= present <= hi or any(ins[i] is None and i not in self.optional for i in range(lo)):
            raise GraphError(f"takes {lo}..{hi} inputs ({lo} required), got {list(node.inputs)}", where=node.where())
        if any(i is not None and i.is_float for i in ins) and not self.accepts_float:
            raise GraphError("integer op got a float input", where=node.where())
        try:
            return tuple(self.infer(list(ins), list(vals)))
        except GraphError as e:
            if e.where is None:
                raise GraphError(e.message, where=node.where()) from None
            raise

    accepts_float: ClassVar[bool] = False

    def infer(self, ins: list[TensorInfo | None], vals: list[np.ndarray | None]) -> Sequence[TensorInfo]:
        raise NotImplementedError

    def run(self, *xs: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def macs(self, ins: Sequence[TensorInfo | None], outs: Sequence[TensorInfo]) -> int:
        """Multiply-accumulates per run (0 for data movement and elementwise ops)."""
        return 0

    def batch_free(self) -> bool:
        """True when the op treats axis 0 as an independent batch axis (so any batch size runs)."""
        return True


def magnitude(info: TensorInfo, value: np.ndarray | None = None) -> int:
    """Largest |v| a tensor can hold: from its value when constant, else from its type."""
    if value is not None and value.size:
        return max(abs(int(value.min())), abs(int(value.max())))
    if value is not None:
        return 0
    return max(abs(info.lo), abs(info.hi))


def require(cond: bool, message: str) -> None:
    if not cond:
        raise GraphError(message)


def spatial_out(size: int, kernel: int, stride: int, dilation: int, pad_begin: int, pad_end: int, ceil_mode: bool = False) -> int:
    """Output length of a sliding window (ONNX/PyTorch rule, including ceil_mode's last-window rule)."""
    span = (kernel - 1) * dilation + 1
    room = size + pad_begin + pad_end - span
    require(room >= 0, f"window of {span} does not fit in {size} + padding {pad_begin}+{pad_end}")
    out = (-(-room // stride) if ceil_mode else room // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad_begin:
        out -= 1  # the last window must start inside the input or its leading padding
    return out
