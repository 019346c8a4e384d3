"""The C++ and numpy spelling of each container type a tensor can have."""

from __future__ import annotations

from typing import cast

import numpy as np

from qlspec.graph.ir import TensorInfo

_CPP = {
    np.dtype(np.int8): "int8_t",
    np.dtype(np.uint8): "uint8_t",
    np.dtype(np.int16): "int16_t",
    np.dtype(np.uint16): "uint16_t",
    np.dtype(np.int32): "int32_t",
    np.dtype(np.uint32): "uint32_t",
    np.dtype(np.int64): "int64_t",
    np.dtype(np.uint64): "uint64_t",
    np.dtype(np.float32): "float",
}


def cpp_type(dtype: np.dtype | TensorInfo) -> str:
    """`int8_t`, `uint16_t`, ... `float`: the C++ type of a container."""
    return _CPP[np.dtype(dtype.dtype if isinstance(dtype, TensorInfo) else dtype)]


def npy_descr(dtype: np.dtype) -> str:
    """The .npy header's descr for a container (`|i1`, `<i4`, ...), as numpy writes it."""
    # the stub's return type also covers structured dtypes (a list of fields); a plain dtype's descr is a str
    return cast(str, np.lib.format.dtype_to_descr(np.dtype(dtype)))


def cpp_int(v: int) -> str:
    """An int64 literal C++ reads exactly (INT64_MIN has no literal of its own)."""
    v = int(v)
    if v == -(1 << 63):
        return "INT64_MIN"
    return f"INT64_C({v})"


def c_string(s: str) -> str:
    """A C++ string literal holding the UTF-8 bytes of `s`: printable ASCII as is, everything else
    (quotes, backslashes, '?' which could start a trigraph, control characters, newlines, non-ASCII)
    as three-digit octal escapes. Names come from users' files, so none can end the literal, a
    comment or a line of the generated code."""
    out = []
    for b in s.encode("utf-8", "surrogatepass"):
        ch = chr(b)
        out.append(ch if 0x20 <= b < 0x7F and ch not in '"\\?' else f"\\{b:03o}")
    return '"' + "".join(out) + '"'
