"""The folders qlspec ships beside its code: the spec library, the app template, the C++ backends.

They live at the top of the repository (``specs/``, ``templates/``, ``backends/``) and are installed
as the data packages ``qlspec.specs``, ``qlspec.templates`` and ``qlspec.backends`` (pyproject.toml's
``package-dir``), so a wheel carries them and an editable install maps them to the checkout. They
are always found through `importlib.resources`, never by a path relative to this file.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Literal

Shipped = Literal["specs", "templates", "backends"]


@cache
def shipped(name: Shipped) -> Path:
    """The installed folder `name` (a real folder: qlspec is never run from a zip archive)."""
    root = files(f"qlspec.{name}")
    if not isinstance(root, Path):
        raise RuntimeError(f"qlspec's {name}/ folder is not on the file system ({root!r}): install qlspec unzipped")
    return root
