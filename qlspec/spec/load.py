"""Load a spec file: YAML with positions, `extends:` fragments merged, validated into an `AppSpec`.

Every value keeps the file, line and column it was written at, so each validation error is reported
as ``FILE:LINE:COL: field.path: message``. Fragments are merged in the order `extends:` lists them,
then the file itself on top: mappings merge key by key, anything else (lists, scalars) replaces.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from qlspec.errors import SpecError
from qlspec.spec.models import AppSpec

SPEC_LIBRARY = Path(__file__).resolve().parents[2] / "specs"

FieldPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Position:
    """Where a key or value was written; line and column are 1-based."""

    file: Path
    line: int
    col: int

    def __str__(self) -> str:
        return f"{_display(self.file)}:{self.line}:{self.col}"


@dataclass
class Source:
    """Plain data (dicts, lists, scalars) plus the position of every key and every value in it."""

    data: dict[str, Any]
    keys: dict[FieldPath, Position] = field(default_factory=dict)
    values: dict[FieldPath, Position] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec and where it came from."""

    spec: AppSpec
    path: Path
    source: Source
    fragments: tuple[Path, ...]


def load_spec(path: str | os.PathLike[str]) -> LoadedSpec:
    """Read, merge and validate the spec at `path`; raise `SpecError` listing every located error."""
    path = Path(path)
    source, fragments = _resolve(path, chain=())
    try:
        spec = AppSpec.model_validate(source.data, context={"base_dir": path.parent})
    except ValidationError as e:
        located = [_locate(err, source, path) for err in e.errors()]
        raise SpecError.many(sorted(located, key=_position_order)) from None
    return LoadedSpec(spec=spec, path=path, source=source, fragments=tuple(fragments))


def resolved_dict(loaded: LoadedSpec) -> dict[str, Any]:
    """The resolved spec as plain JSON-able data: defaults applied, extends merged, paths as strings."""
    return loaded.spec.model_dump(mode="json", by_alias=True, exclude={"extends"})


# --------------------------------------------------------------------------------------------------
# reading and merging


def read_yaml(path: Path) -> Source:
    """Parse one YAML file into plain data with positions; the top level must be a mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("file not found", where=_display(path)) from None
    except (IsADirectoryError, UnicodeDecodeError) as e:
        raise SpecError(f"cannot read spec: {e.__class__.__name__}", where=_display(path)) from None
    try:
        node = YAML(typ="rt").load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{_display(path)}:{mark.line + 1}:{mark.column + 1}" if mark else _display(path)
        raise SpecError(f"invalid YAML: {e.problem or e.context}", where=where) from None
    if node is None:
        node = CommentedMap()
    if not isinstance(node, CommentedMap):
        raise SpecError("the top level of a spec must be a mapping of sections", where=f"{_display(path)}:1:1")
    source = Source(data={})
    source.data = _plain(node, (), path, source)
    return source


def _plain(node: Any, at: FieldPath, path: Path, source: Source) -> Any:
    if isinstance(node, CommentedMap):
        out = {}
        for key, value in node.items():
            if not isinstance(key, str):
                line, col = node.lc.key(key)
                raise SpecError(f"keys must be strings (got {key!r})", where=f"{_display(path)}:{line + 1}:{col + 1}")
            kline, kcol = node.lc.key(key)
            vline, vcol = node.lc.value(key)
            source.keys[at + (key,)] = Position(path, kline + 1, kcol + 1)
            source.values[at + (key,)] = Position(path, vline + 1, vcol + 1)
            out[key] = _plain(value, at + (key,), path, source)
        return out
    if isinstance(node, CommentedSeq):
        out_list = []
        for i, value in enumerate(node):
            line, col = node.lc.item(i)
            source.keys[at + (i,)] = source.values[at + (i,)] = Position(path, line + 1, col + 1)
            out_list.append(_plain(value, at + (i,), path, source))
        return out_list
    if isinstance(node, str):
        return str(node)
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return node


def _resolve(path: Path, chain: tuple[Path, ...]) -> tuple[Source, list[Path]]:
    """`path` with its `extends:` fragments merged under it (recursively), and the fragments used."""
    real = path.resolve()
    if real in chain:
        cycle = " -> ".join(_display(p) for p in chain + (real,))
        raise SpecError(f"extends: cycle {cycle}", where=_display(path))
    own = read_yaml(path)
    extends = own.data.get("extends", [])
    if isinstance(extends, str):
        extends = [extends]
    if not isinstance(extends, list):
        raise SpecError("extends: must be a list of fragment paths", where=str(own.values[("extends",)]))
    merged = Source(data={})
    fragments: list[Path] = []
    for i, name in enumerate(extends):
        where = own.values.get(("extends", i)) or own.values[("extends",)]
        fragment = _find_fragment(str(name), path.parent, where)
        frag_source, frag_used = _resolve(fragment, chain + (real,))
        for key in ("extends", "name"):  # a fragment never names the application
            _drop(frag_source, key)
        merged = _merge(merged, frag_source)
        fragments += frag_used + [fragment]
    return _merge(merged, own), fragments


def _drop(source: Source, key: str) -> None:
    """Remove a top-level key and the positions of everything under it."""
    source.data.pop(key, None)
    for table in (source.keys, source.values):
        for path in [p for p in table if p[0] == key]:
            del table[path]


def _find_fragment(name: str, base: Path, where: Position) -> Path:
    for candidate in (base / name, SPEC_LIBRARY / name):
        if candidate.is_file():
            return candidate
    known = sorted(str(p.relative_to(SPEC_LIBRARY)) for p in SPEC_LIBRARY.rglob("*.yaml"))
    hint = difflib.get_close_matches(name, known, n=1)
    tip = f" (did you mean '{hint[0]}'?)" if hint else f" (library: {', '.join(known)})"
    raise SpecError(f"extends: fragment '{name}' not found next to the spec or in the spec library{tip}", where=str(where))


def _merge(base: Source, over: Source) -> Source:
    """Deep merge: `over` wins; mappings merge per key; positions follow the value that wins."""
    out = Source(data=_merge_data(base.data, over.data), keys=dict(base.keys), values=dict(base.values))
    for table_name in ("keys", "values"):
        table = getattr(out, table_name)
        overriding = getattr(over, table_name)
        replaced = [p for p in overriding if not isinstance(_get(over.data, p), dict)]
        for p in replaced:  # a replaced list or scalar forgets the positions of what it replaced
            for old in [q for q in table if q[: len(p)] == p and len(q) > len(p)]:
                del table[old]
        table.update(overriding)
    return out


def _merge_data(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = _merge_data(base[key], value) if key in base else value
        return out
    return over


def _get(data: Any, at: FieldPath) -> Any:
    for part in at:
        data = data[part]
    return data


# --------------------------------------------------------------------------------------------------
# errors with positions


def _locate(err: dict[str, Any], source: Source, path: Path) -> tuple[str, str]:
    """One pydantic error -> (``FILE:LINE:COL``, ``field.path: message``)."""
    loc: FieldPath = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in _UNION_TAGS))
    kind = err["type"]
    message = err["msg"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(AppSpec, loc[:-1])
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        message = f"unknown key '{loc[-1]}'" + (f" (did you mean '{hint[0]}'?)" if hint else f" (allowed: {', '.join(allowed)})")
        position = source.keys.get(loc)
    elif kind == "union_tag_invalid":  # an unknown data.kind or network.arch: point at that key
        field = "arch" if err["ctx"]["discriminator"].endswith("()") else err["ctx"]["discriminator"].strip("'")
        loc = loc + (field,)
        message = f"must be one of {err['ctx']['expected_tags']} (got {err['ctx']['tag']!r})"
        position = _nearest(source.values, loc)
    elif kind == "missing":
        message = "required field is missing"
        position = source.keys.get(loc[:-1]) if loc[:-1] else Position(path, 1, 1)
    else:
        if kind in _BOUNDS:
            bound_name, symbol = _BOUNDS[kind]
            message = f"must be {symbol} {err['ctx'][bound_name]}"
        elif kind == "literal_error":
            message = f"must be {err['ctx']['expected']}"
        elif kind == "value_error":
            message = str(err["ctx"]["error"])
            first = message.split(" ", 1)[0]
            if (loc + (first,)) in source.values:  # a cross-field rule names its field first
                loc = loc + (first,)
        if "input" in err and not isinstance(err["input"], (dict, list)) and kind != "value_error":
            message += f" (got {err['input']!r})"
        position = _nearest(source.values, loc)
    dotted = ".".join(str(p) for p in loc) or "(spec)"
    return (str(position) if position else f"{_display(path)}:1:1", f"{dotted}: {message}")




_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="),
           "less_than": ("lt", "<"), "less_than_equal": ("le", "<=")}


def _position_order(item: tuple[str, str]) -> tuple[str, int, int]:
    file, _, rest = item[0].rpartition(":")
    file, _, line = file.rpartition(":")
    return (file, int(line or 0), int(rest or 0)) if line.isdigit() and rest.isdigit() else (item[0], 0, 0)


def _nearest(table: dict[FieldPath, Position], loc: FieldPath) -> Position | None:
    for n in range(len(loc), 0, -1):
        if loc[:n] in table:
            return table[loc[:n]]
    return None


def _allowed_keys(model: type[BaseModel], at: FieldPath) -> list[str]:
    """The keys a mapping at `at` may hold, found by walking the models' annotations."""
    models = [model]
    for part in at:
        if isinstance(part, int):
            continue
        nxt: list[type[BaseModel]] = []
        for m in models:
            for name, info in m.model_fields.items():
                if part in (name, info.alias):
                    nxt += _models_in(info.annotation)
        models = nxt
    return sorted({info.alias or name for m in models for name, info in m.model_fields.items()})


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, typing.Annotated):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def _union_tags() -> set[str]:
    """Discriminator values pydantic inserts into error locations of tagged unions (data.kind, network.arch)."""
    tags = set()
    for section, key in (("data", "kind"), ("network", "arch")):
        for m in _models_in(AppSpec.model_fields[section].annotation):
            tags.update(typing.get_args(m.model_fields[key].annotation))
    return tags


_UNION_TAGS = _union_tags()


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
