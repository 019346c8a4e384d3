"""Atomic file writes, the one way qlspec writes a file that something else may read.

Each helper writes to a temporary name beside the target and renames it into place, so a reader (or
a later run) sees the old file or the new one, never half of one. A failure (a full disk, a read-only
folder) raises `OSError` with its errno and removes the temporary file, so nothing half-written stays
behind to fill the disk further. torch.save reports a full disk as a RuntimeError from its C++ zip
writer, so `save_torch` serialises in memory and writes the bytes here.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO


@contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """An open binary file that becomes `path` when the block ends without an exception."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes | memoryview) -> None:
    with replacing(path) as f:
        f.write(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | os.PathLike[str], data: Any, indent: int = 2) -> None:
    write_text(path, json.dumps(data, indent=indent, sort_keys=False) + "\n")


def save_npz(path: str | os.PathLike[str], **arrays: Any) -> None:
    """np.savez, uncompressed, atomically."""
    import numpy as np  # imported here: plan and diff never write arrays

    with replacing(path) as f:
        named: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
        np.savez(f, **named)


def save_torch(path: str | os.PathLike[str], obj: Any) -> None:
    """torch.save, atomically, with a full disk reported as OSError."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getbuffer())
