"""Reading a user's .npz file (`qlspec infer --inputs/--expect`, ``network.param_stats``) without
trusting it: every failure is one `QlspecError` located at the file, and nothing is allocated before
the file is shown to hold it.

numpy's own reader allocates the array an .npy header announces before reading its data, so a
100-byte file announcing a 2^40-element array is a MemoryError, and pickled object arrays would run
code if pickles were allowed. `read_npz` reads each member's header first and requires:

- an .npy header (format 1.0, 2.0 or 3.0) and a dtype without Python objects;
- exactly ``prod(shape) * itemsize`` bytes of data after it (the member's uncompressed size);
- at most ``limit_bytes`` of array data in the whole file (2 GiB by default).

Only then is the member read, by numpy (``allow_pickle=False``).
"""

from __future__ import annotations

import math
import os
import tokenize
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from qlspec.errors import QlspecError

__all__ = ["LIMIT_BYTES", "read_npz"]

LIMIT_BYTES = 2 << 30

_NPY_MAGIC = b"\x93NUMPY"


def read_npz(
    path: str | os.PathLike[str],
    keys: Iterable[str] | None = None,
    *,
    error: type[QlspecError] = QlspecError,
    limit_bytes: int = LIMIT_BYTES,
) -> dict[str, np.ndarray]:
    """The arrays of the .npz at `path` by name (``x.npy`` in the archive is ``x``), in the file's order;
    only those named in `keys` when given. Raises `error` located at the file (module docstring)."""
    path = Path(path)
    where = str(path)
    wanted = None if keys is None else set(keys)
    try:
        with zipfile.ZipFile(path) as z:
            members = [i for i in z.infolist() if wanted is None or i.filename.removesuffix(".npy") in wanted]
            sizes = [_checked_size(z, info, where, error) for info in members]
            if sum(sizes) > limit_bytes:
                raise error(f"holds {sum(sizes):,} bytes of arrays, more than the {limit_bytes:,} read at most", where=where)
            arrays = {}
            for info in members:
                with z.open(info) as f:
                    arrays[info.filename.removesuffix(".npy")] = np.lib.format.read_array(f, allow_pickle=False)
            return arrays
    except FileNotFoundError:
        raise error("no such file", where=where) from None
    except IsADirectoryError:
        raise error("is a folder, not an .npz file", where=where) from None
    except zipfile.BadZipFile as e:
        if _starts_with(path, _NPY_MAGIC):
            raise error("an .npy array, not an .npz of named arrays (save it with np.savez)", where=where) from None
        raise error(f"not a readable .npz file ({str(e)[:80]})", where=where) from None
    except (OSError, EOFError, ValueError, zlib.error, zipfile.LargeZipFile, NotImplementedError, RuntimeError) as e:
        # a member cut short, a bad CRC or deflate stream, an unsupported compression or an encrypted member
        raise error(f"not a readable .npz file ({e.__class__.__name__}: {str(e)[:80]})", where=where) from None


def _checked_size(z: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, error: type[QlspecError]) -> int:
    """The data bytes of member `info`, once its header is shown to describe exactly that many."""
    key = info.filename.removesuffix(".npy")
    with z.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
        except (ValueError, EOFError, SyntaxError, TypeError, KeyError, UnicodeDecodeError, tokenize.TokenError) as e:
            raise error(f"array {key!r}: not an .npy array ({str(e)[:80]})", where=where) from None
        start = f.tell()
    if dtype.hasobject:
        raise error(f"array {key!r}: holds Python objects, which are not read", where=where)
    size = math.prod(shape) * dtype.itemsize
    if info.file_size - start != size:
        raise error(
            f"array {key!r}: its header announces {shape} {dtype} ({size:,} bytes) but {info.file_size - start:,} bytes follow",
            where=where,
        )
    return size


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False
