"""The weights blob: every constant the generated C++ reads, each at a 64-byte-aligned offset of one
file, in the container type the C++ declares for it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from qlspec import atomic

ALIGN = 64


class Blob:
    """Append arrays, get their byte offsets; identical arrays are stored once."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self._seen: dict[tuple[str, bytes], int] = {}

    def add(self, a: np.ndarray) -> int:
        data = np.ascontiguousarray(a).tobytes()
        key = (np.asarray(a).dtype.str, hashlib.sha256(data).digest())
        if key in self._seen:
            return self._seen[key]
        offset = self._size
        pad = -len(data) % ALIGN
        self._parts.append(data + b"\0" * pad)
        self._size += len(data) + pad
        self._seen[key] = offset
        return offset

    @property
    def size(self) -> int:
        return self._size

    def bytes(self) -> bytes:
        return b"".join(self._parts)

    def write(self, path: Path) -> None:
        atomic.write_bytes(path, self.bytes())
