"""The source files a stage is made of: the import closure of its implementation module.

A stage's key digests its code, so that editing what a stage runs reruns it, and editing anything
else does not. The code is found, not listed: starting from the module of ``StageDef.run``, every
``qlspec`` module it imports (at the top, inside functions, or under ``TYPE_CHECKING``) is followed,
with the ``__init__.py`` of each package on the way, and so is every ``"qlspec.module:attr"``
string (how the registries name what they import lazily, e.g. `qlspec.nets.registry`). Third-party
packages are not followed: their versions are the environment's. A module that loads a C source
beside it, named as ``Path(__file__).with_name("kernel.c")`` (`qlspec.native`'s kernels), has that
file in the closure too: the kernel is part of the code it runs.

Imports are read with a regular expression, not by executing or parsing the module, so `plan` stays
fast; it sees every ``import``/``from ... import`` statement, also in docstrings, so the closure may
hold a module a stage does not run, never miss one it does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

_FROM = re.compile(r"^[ \t]*from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#]*)", re.MULTILINE)
_IMPORT = re.compile(r"^[ \t]*import[ \t]+([^\n#]+)", re.MULTILINE)
_NAMED = re.compile(r"""["']((?:\w+\.)*\w+):\w+["']""")
_SIBLING = re.compile(r"""with_name\(\s*["']([\w.-]+\.(?:c|h|cc|cpp))["']\s*\)""")


def import_closure(module: str, root: Path, package: str = "qlspec") -> tuple[Path, ...]:
    """The files of `module` and of every module of `package` it imports, transitively, sorted.

    `root` is the folder of `package` (``root/a/b.py`` is ``package.a.b``)."""
    return import_closures((module,), root, package)[module]


def import_closures(modules: Iterable[str], root: Path, package: str = "qlspec") -> dict[str, tuple[Path, ...]]:
    """`import_closure` of several modules, reading the package once."""
    index = _index(root, package)
    edges: dict[str, tuple[str, ...]] = {}
    out = {}
    for module in modules:
        seen: set[str] = set()
        todo = [module]
        while todo:
            name = todo.pop()
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # the packages on the way are imported first
                prefix = ".".join(parts[:depth])
                if prefix in index and prefix not in seen:
                    seen.add(prefix)
                    if prefix not in edges:
                        edges[prefix] = _imports(index[prefix], prefix, package)
                    todo += edges[prefix]
        files = {index[name] for name in seen}
        out[module] = tuple(sorted(files | {path.with_name(f) for path in files for f in _siblings(path)}))
    return out


def _index(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its ``__init__.py``)."""
    out = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).with_suffix("").parts
        out[".".join((package, *(rel[:-1] if rel[-1] == "__init__" else rel)))] = path
    return out


def _imports(path: Path, name: str, package: str) -> tuple[str, ...]:
    stat = path.stat()
    return _imports_cached(path, stat.st_mtime_ns, stat.st_size, path.name == "__init__.py", name, package)


@lru_cache(maxsize=4096)
def _imports_cached(path: Path, mtime_ns: int, size: int, is_package: bool, name: str, package: str) -> tuple[str, ...]:
    """Module names `path` may import: ``from X import a, b`` gives X, X.a and X.b (a and b may be
    submodules); relative names are resolved against the module `name`."""
    text = path.read_text(encoding="utf-8", errors="replace")
    out: list[str] = []
    for source, names in _FROM.findall(text):
        base = _absolute(source, name, is_package)
        out.append(base)
        for item in re.sub(r"#[^\n]*", "", names).strip("()").replace("\n", " ").split(","):
            word = item.split()[0] if item.split() else ""
            if word.isidentifier():
                out.append(f"{base}.{word}" if base else word)
    for names in _IMPORT.findall(text):
        for item in names.split(","):
            word = item.split()[0] if item.split() else ""
            out.append(word)
    out += _NAMED.findall(text)
    return tuple(m for m in out if m == package or m.startswith(package + "."))


def _siblings(path: Path) -> tuple[str, ...]:
    """Names of the C sources beside `path` that it loads (``with_name("x.c")``) and that exist."""
    stat = path.stat()
    return _siblings_cached(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4096)
def _siblings_cached(path: Path, mtime_ns: int, size: int) -> tuple[str, ...]:
    text = path.read_text(encoding="utf-8", errors="replace")
    return tuple(name for name in _SIBLING.findall(text) if (path.parent / name).is_file())


def _absolute(source: str, name: str, is_package: bool) -> str:
    """``from ..x import`` inside module `name` -> the absolute module name."""
    dots = len(source) - len(source.lstrip("."))
    if not dots:
        return source
    parts = name.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (dots - 1)]
    rest = source[dots:]
    return ".".join([*base, rest] if rest else base)
