"""Reading an ONNX file safely: loading, typed attribute access, integers stored in float32."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import AttributeProto, TensorProto, numpy_helper

from qlspec.errors import OnnxImportError

_ATTR_KIND: dict[int, str] = {
    AttributeProto.FLOAT: "FLOAT",
    AttributeProto.INT: "INT",
    AttributeProto.STRING: "STRING",
    AttributeProto.TENSOR: "TENSOR",
    AttributeProto.FLOATS: "FLOATS",
    AttributeProto.INTS: "INTS",
}


def load_model(path: Path) -> onnx.ModelProto:
    """Parse the file; a missing, truncated or non-ONNX file is an `OnnxImportError`."""
    where = path.name
    try:
        data = path.read_bytes()
    except OSError as e:
        raise OnnxImportError(f"cannot read the file ({e.strerror})", where=str(path)) from None
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise OnnxImportError(f"not a valid ONNX file (truncated or corrupt: {e})", where=where) from None
    if not model.HasField("graph") or not model.graph.node:
        raise OnnxImportError("the file holds no graph (empty, truncated or not ONNX)", where=where)
    return model


MAX_TENSOR_ELEMENTS = 2**28  # 1 GiB of float32: far beyond any edge network's largest weight


def tensor_value(t: TensorProto, what: str, model_dir: Path | None) -> np.ndarray:
    """The numpy value of an initializer or constant, or `ValueError` saying what is wrong with it.

    Dims, element type and data length are checked before anything is allocated. External data is
    read only from a plain file name beside the model (no absolute path, no ``..``, no symlink out
    of the folder); QuantLab's files never use it."""
    dims = [int(d) for d in t.dims]
    if any(d < 0 for d in dims) or int(np.prod(dims, dtype=np.float64)) > MAX_TENSOR_ELEMENTS:
        raise ValueError(f"{what} has unusable dims {dims}")
    if t.data_type not in TensorProto.DataType.values() or t.data_type == TensorProto.UNDEFINED:
        raise ValueError(f"{what} has unknown element type {t.data_type}")
    base = None
    if t.data_location == TensorProto.EXTERNAL:
        entries = {e.key: e.value for e in t.external_data}
        location = entries.get("location", "")
        if model_dir is None or not location or Path(location).is_absolute() or Path(location).name != location:
            raise ValueError(f"{what} names external data {location[:80]!r}: only a file beside the model is read")
        target = (model_dir / location).resolve()
        if target.parent != model_dir.resolve() or not target.is_file():
            raise ValueError(f"{what} names external data {location[:80]!r}, which is not a file beside the model")
        base = str(model_dir)
    try:
        value = numpy_helper.to_array(t, base_dir=base or "")
    except Exception as e:
        raise ValueError(f"{what} is malformed ({e.__class__.__name__}: {str(e)[:100]})") from None
    if list(value.shape) != dims:
        raise ValueError(f"{what} holds {value.size} values for dims {dims}")
    return value


def integral(values: np.ndarray, what: str) -> np.ndarray:
    """Integers stored in a float (or integer) tensor, as int64; anything non-integral is an error."""
    a = np.asarray(values)
    if a.dtype.kind in "iub":
        return a.astype(np.int64)
    if a.dtype.kind != "f":
        raise ValueError(f"{what} has dtype {a.dtype}, expected numbers")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what} holds inf or NaN")
    r = np.round(a)
    if not np.array_equal(r, a):
        bad = a[r != a].ravel()[0]
        raise ValueError(f"{what} holds a non-integer value ({bad}); QuantLab integer graphs store integers")
    if np.abs(r).max(initial=0) >= 2.0**63:
        raise ValueError(f"{what} exceeds int64")
    return r.astype(np.int64)


def unique_attributes(node: onnx.NodeProto, fail: Callable[[str], NoReturn]) -> dict[str, AttributeProto]:
    """The node's attributes by name; `fail(message)` when a name is given more than once (ONNX
    would silently take the last)."""
    names = [a.name for a in node.attribute]
    if len(set(names)) != len(names):
        fail(f"attribute {next(n for n in names if names.count(n) > 1)!r} is given more than once")
    return {a.name: a for a in node.attribute}


class Attributes:
    """Typed access to one node's attributes. Every read names the attribute; whatever is left
    unread when `finish()` is called is an unsupported attribute."""

    ANNOTATIONS = frozenset({"weight_bits", "bias_bits", "out_bits", "mult_bits", "add_bits"})  # DORY's, informative

    def __init__(self, node: onnx.NodeProto, fail: Callable[[str], NoReturn]) -> None:
        self.node = node
        self.fail = fail
        self.by_name = unique_attributes(node, fail)
        self.read: set[str] = set()

    def has(self, name: str) -> bool:
        return name in self.by_name

    def _get(self, name: str, kinds: tuple[int, ...]):
        self.read.add(name)
        a = self.by_name.get(name)
        if a is None:
            return None
        if a.type not in kinds:
            want = " or ".join(_ATTR_KIND[k] for k in kinds)
            self.fail(f"attribute {name!r} must be {want} (got {_ATTR_KIND.get(a.type, a.type)})")
        return a

    def int(self, name: str, default: int | None = None) -> int:
        a = self._get(name, (AttributeProto.INT,))
        if a is None:
            if default is None:
                self.fail(f"missing attribute {name!r}")
            return default
        return int(a.i)

    def ints(self, name: str, default: tuple[builtins.int, ...] | None = None) -> tuple[builtins.int, ...] | None:
        a = self._get(name, (AttributeProto.INTS,))
        return default if a is None else tuple(int(v) for v in a.ints)

    def float(self, name: str, default: float | None = None) -> float | None:
        a = self._get(name, (AttributeProto.FLOAT, AttributeProto.INT))
        if a is None:
            return default
        return float(a.f) if a.type == AttributeProto.FLOAT else float(a.i)

    def string(self, name: str, default: str) -> str:
        a = self._get(name, (AttributeProto.STRING,))
        return default if a is None else a.s.decode()

    def integer(self, name: str, default: builtins.int | None = None) -> builtins.int:
        """An integer however it is spelled: INT, FLOAT or a one-element TENSOR (QuantLib writes
        RequantShift's div/signed/n_levels as TENSOR in some versions and INT in others)."""
        a = self._get(name, (AttributeProto.INT, AttributeProto.FLOAT, AttributeProto.TENSOR))
        if a is None:
            if default is None:
                self.fail(f"missing attribute {name!r}")
            return default
        if a.type == AttributeProto.INT:
            return int(a.i)
        try:
            value = np.array(a.f) if a.type == AttributeProto.FLOAT else tensor_value(a.t, f"attribute {name!r}", None)
        except ValueError as e:
            self.fail(str(e))
        if value.size != 1:
            self.fail(f"attribute {name!r} must hold one value (got shape {value.shape})")
        try:
            return int(integral(value.reshape(()), f"attribute {name!r}"))
        except ValueError as e:
            self.fail(str(e))

    def finish(self, supported: str | None = None) -> None:
        extra = sorted(set(self.by_name) - self.read - self.ANNOTATIONS)
        if extra:
            known = sorted(self.read)
            self.fail(f"unsupported attribute(s) {extra} (supported: {', '.join(known) if known else 'none'})")
