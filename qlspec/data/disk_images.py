"""`DiskImages`: a split's uint8 images left in its uncompressed .npz and read where they are indexed.

The training split of the default app is 518 MB of images; a training process that holds it adds
that much to its resident set for the whole of float training and QAT. `DiskImages` keeps it in the
file (the data stage writes `FaceSet` files uncompressed, so each array lies contiguous in the zip):
every index reads just the images it names with ``os.pread`` into a new array, so they pass through
the kernel's page cache, which the system reclaims as it needs, not through the process's memory.

What it offers is what training and evaluation read from ``FaceSet.images``: ``len``, ``shape``,
``dtype``, ``ndim``, and indexing by an integer, a slice, or an integer or boolean array along the
first axis, which returns a new ``np.ndarray`` exactly as indexing the loaded array would.
``np.asarray`` reads everything. It survives pickling (DataLoader workers, spawned processes) as its
file name and offsets; each process opens the file itself.
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DiskImages"]

_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # a zip member's local file header (30 bytes)


class DiskImages:
    """The array stored as `key` in the uncompressed .npz at `path`, read on access (module docstring).

    Raises ValueError when the member is compressed, Fortran-ordered or holds objects (then load the
    file into memory instead).
    """

    def __init__(self, path: str | os.PathLike[str], key: str = "images") -> None:
        self.path = Path(path)
        with zipfile.ZipFile(self.path) as z:
            info = z.getinfo(f"{key}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"{self.path}: {key} is compressed; only stored (np.savez) members are read in place")
        with open(self.path, "rb") as f:
            f.seek(info.header_offset)
            fields = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
            if fields[0] != b"PK\x03\x04":
                raise ValueError(f"{self.path}: {key} has no local zip header")
            f.seek(info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1])
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"{self.path}: {key} is in .npy format {version}, not 1.0 or 2.0")
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            self.offset = f.tell()
        if fortran or dtype.hasobject or not shape:
            raise ValueError(f"{self.path}: {key} is not a C-ordered array of plain numbers")
        self.shape: tuple[int, ...] = tuple(shape)
        self.dtype = dtype
        self.ndim = len(shape)
        self._row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        self._fd: int | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        n = self.shape[0]
        if isinstance(index, slice):
            start, stop, step = index.indices(n)
            if step == 1:
                return self._read_run(start, max(start, stop))
            rows = np.arange(start, stop, step)
        elif isinstance(index, (int, np.integer)):
            i = int(index) + n if index < 0 else int(index)
            if not 0 <= i < n:
                raise IndexError(f"index {int(index)} is out of bounds for {n} images")
            return self._read_run(i, i + 1)[0]
        else:
            rows = np.asarray(index)
            if rows.dtype == bool:
                if rows.shape != (n,):
                    raise IndexError(f"boolean index of shape {rows.shape} for {n} images")
                rows = np.flatnonzero(rows)
            elif rows.dtype.kind not in "iu" or rows.ndim != 1:
                raise IndexError(
                    f"images are indexed by an integer, a slice or a 1-D integer or boolean array, not {rows.dtype} {rows.shape}"
                )
            rows = np.where(rows < 0, rows + n, rows)
            if rows.size and (rows.min() < 0 or rows.max() >= n):
                raise IndexError(f"an index is out of bounds for {n} images")
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        flat = out.reshape(-1).view(np.uint8).data
        for k, i in enumerate(rows.tolist()):
            self._pread_into(flat[k * self._row : (k + 1) * self._row], i)
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self[:]
        return a if dtype is None else a.astype(dtype)

    def _read_run(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` in one read."""
        out = np.empty((stop - start, *self.shape[1:]), self.dtype)
        if stop > start:
            self._pread_into(out.reshape(-1).view(np.uint8).data, start)
        return out

    def _pread_into(self, buf: memoryview, row: int) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        pos, done = self.offset + row * self._row, 0
        while done < len(buf):
            got = os.preadv(self._fd, [buf[done:]], pos + done)
            if got <= 0:
                raise OSError(f"{self.path}: the file ends inside its images (truncated after it was opened?)")
            done += got

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None}

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"DiskImages({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"
