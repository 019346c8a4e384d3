"""Load a spec file: YAML with positions, `extends:` fragments merged, validated into an `AppSpec`.

Every value keeps the file, line and column it was written at, so each validation error is reported
as ``FILE:LINE:COL: field.path: message``. Fragments are merged in the order `extends:` lists them,
then the file itself on top: mappings merge key by key, anything else (lists, scalars) replaces.

A spec is plain YAML data: mappings with string keys, lists, strings, numbers, booleans and null.
Anything else is refused with its position: tags (``!foo``, ``!!python/...``, ``!!omap``, ``!!set``),
merge keys (``<<``), dates, binary. Explicit limits keep hostile input cheap: `MAX_BYTES` per file,
`MAX_DEPTH` levels of nesting, `MAX_VALUES` values per file after anchors and aliases are expanded
(an alias bomb stops there), integers within int64, `MAX_EXTENDS_DEPTH` levels and `MAX_FRAGMENTS`
fragment files per spec (each read once however often it is extended). `extends` resolves only
inside the spec's own folder tree, the git repository that holds it (an example may extend its
sibling) and the spec library, after symlinks are resolved.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedOrderedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from qlspec.errors import SpecError
from qlspec.resources import shipped
from qlspec.spec.models import AppSpec
from qlspec.spec.secrets import is_secret

SPEC_LIBRARY = shipped("specs")

FieldPath = tuple[str | int, ...]

MAX_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_VALUES = 20_000
MAX_EXTENDS_DEPTH = 16
MAX_FRAGMENTS = 64
INT64 = 2**63
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


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
    folder = path.resolve().parent
    repo = next((d for d in (folder, *folder.parents) if (d / ".git").exists()), folder)
    source, fragments = _resolve(path, chain=(), confine=(folder, repo, SPEC_LIBRARY.resolve()), cache={})
    try:
        spec = AppSpec.model_validate(source.data, context={"base_dir": path.parent})
    except ValidationError as e:
        located: list[tuple[str, str]] = [_locate(err, source, path) for err in e.errors()]
        located.sort(key=_position_order)
        raise SpecError.many(located) from None
    return LoadedSpec(spec=spec, path=path, source=source, fragments=tuple(fragments))


def resolved_dict(loaded: LoadedSpec) -> dict[str, Any]:
    """The resolved spec as plain JSON-able data: defaults applied, extends merged, paths as strings."""
    return loaded.spec.model_dump(mode="json", by_alias=True, exclude={"extends"})


# --------------------------------------------------------------------------------------------------
# reading and merging


def read_yaml(path: Path) -> Source:
    """Parse one YAML file into plain data with positions; the top level must be a mapping."""
    try:
        if path.stat().st_size > MAX_BYTES:
            raise SpecError(f"spec file larger than {MAX_BYTES // 1024} KiB", where=_display(path))
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("file not found", where=_display(path)) from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError, OSError) as e:
        raise SpecError(f"cannot read spec: {e.__class__.__name__}", where=_display(path)) from None
    bad = _CONTROL.search(text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        col = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        raise SpecError(f"control character U+{ord(bad.group()):04X} is not allowed in a spec", where=f"{_display(path)}:{line}:{col}")
    try:
        node = YAML(typ="rt").load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{_display(path)}:{mark.line + 1}:{mark.column + 1}" if mark else _display(path)
        raise SpecError(f"invalid YAML: {_without_values(e.problem or e.context)}", where=where) from None
    except RecursionError:
        raise SpecError(f"nesting too deep (a spec may nest {MAX_DEPTH} levels)", where=_display(path)) from None
    except Exception as e:
        # long to convert, a tag on the wrong kind of node) is a YAML error in this file, not a crash
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else e.__class__.__name__
        raise SpecError(f"invalid YAML: {reason}", where=_display(path)) from None
    if node is None:
        node = CommentedMap()
    if not isinstance(node, CommentedMap):
        raise SpecError("the top level of a spec must be a mapping of sections", where=f"{_display(path)}:1:1")
    source = Source(data={})
    source.data = _plain(node, (), path, source, [0])
    return source


def _where(path: Path, source: Source, at: FieldPath) -> str:
    pos = source.values.get(at)
    return str(pos) if pos else _display(path)


def _plain(node: Any, at: FieldPath, path: Path, source: Source, count: list[int]) -> Any:
    count[0] += 1
    if count[0] > MAX_VALUES:
        raise SpecError(f"more than {MAX_VALUES} values (after expanding anchors and aliases)", where=_where(path, source, at))
    if len(at) > MAX_DEPTH:
        raise SpecError(f"nesting deeper than {MAX_DEPTH} levels", where=_where(path, source, at))
    tag = getattr(getattr(node, "tag", None), "value", None)
    if tag is not None and isinstance(node, (CommentedMap, CommentedSeq)):
        raise SpecError(f"YAML tags are not supported (got {str(tag)[:60]})", where=_where(path, source, at))
    if isinstance(node, CommentedOrderedMap):
        raise SpecError("YAML tags are not supported (got !!omap)", where=_where(path, source, at))
    if isinstance(node, CommentedMap):
        if getattr(node, "merge", None):
            raise SpecError("YAML merge keys (<<) are not supported: write the keys out", where=_where(path, source, at))
        out = {}
        for key, value in node.items():
            if not isinstance(key, str):
                line, col = node.lc.key(key)
                raise SpecError(f"keys must be strings (got {key!r})", where=f"{_display(path)}:{line + 1}:{col + 1}")
            kline, kcol = node.lc.key(key)
            vline, vcol = node.lc.value(key)
            source.keys[at + (key,)] = Position(path, kline + 1, kcol + 1)
            source.values[at + (key,)] = Position(path, vline + 1, vcol + 1)
            out[key] = _plain(value, at + (key,), path, source, count)
        return out
    if isinstance(node, CommentedSeq):
        out_list = []
        for i, value in enumerate(node):
            line, col = node.lc.item(i)
            source.keys[at + (i,)] = source.values[at + (i,)] = Position(path, line + 1, col + 1)
            out_list.append(_plain(value, at + (i,), path, source, count))
        return out_list
    if tag is not None and not str(tag).startswith("tag:yaml.org,2002:"):
        raise SpecError(f"YAML tags are not supported (got {str(tag)[:60]})", where=_where(path, source, at))
    if isinstance(node, str):
        return str(node)
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        if not -INT64 <= int(node) < INT64:
            raise SpecError("integer beyond 64 bits", where=_where(path, source, at))
        return int(node)
    if isinstance(node, float):
        return float(node)
    raise SpecError(
        f"unsupported YAML value ({type(node).__name__}): a spec holds strings, numbers, booleans, null, lists and mappings",
        where=_where(path, source, at),
    )


def _resolve(
    path: Path, chain: tuple[Path, ...], confine: tuple[Path, ...], cache: dict[Path, tuple[Source, list[Path]]]
) -> tuple[Source, list[Path]]:
    """`path` with its `extends:` fragments merged under it (recursively), and the fragments used.
    `cache` holds each fragment resolved once (a diamond of extends costs one read per file)."""
    real = path.resolve()
    if real in chain:
        cycle = " -> ".join(_display(p) for p in chain + (real,))
        raise SpecError(f"extends: cycle {cycle}", where=_display(path))
    if real in cache:
        source, used = cache[real]
        return _copy(source), list(used)
    if len(chain) > MAX_EXTENDS_DEPTH:
        raise SpecError(f"extends: more than {MAX_EXTENDS_DEPTH} levels deep", where=_display(path))
    if len(cache) >= MAX_FRAGMENTS:
        raise SpecError(f"extends: more than {MAX_FRAGMENTS} fragment files", where=_display(path))
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
        if not isinstance(name, str):
            raise SpecError("extends: each entry must be a fragment path", where=str(where))
        fragment = _find_fragment(name, path.parent, where, confine)
        frag_source, frag_used = _resolve(fragment, chain + (real,), confine, cache)
        for key in ("extends", "name"):  # a fragment never names the application
            _drop(frag_source, key)
        merged = _merge(merged, frag_source)
        fragments += frag_used + [fragment]
    result = _merge(merged, own)
    cache[real] = (_copy(result), list(fragments))
    return result, fragments


def _copy(source: Source) -> Source:
    return Source(copy.deepcopy(source.data), dict(source.keys), dict(source.values))


def _drop(source: Source, key: str) -> None:
    """Remove a top-level key and the positions of everything under it."""
    source.data.pop(key, None)
    for table in (source.keys, source.values):
        for path in [p for p in table if p[0] == key]:
            del table[path]


def _find_fragment(name: str, base: Path, where: Position, confine: tuple[Path, ...]) -> Path:
    if "\x00" in name or len(name) > 1024:
        raise SpecError("extends: not a usable fragment path", where=str(where))
    for candidate in (base / name, SPEC_LIBRARY / name):
        try:
            if not candidate.is_file():
                continue
            real = candidate.resolve()
        except (OSError, RuntimeError):
            continue
        if not any(real.is_relative_to(r) for r in confine):
            raise SpecError(
                f"extends: fragment '{name}' lies outside the spec's folder, its git repository and the spec library", where=str(where)
            )
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


def _locate(err: Mapping[str, Any], source: Source, path: Path) -> tuple[str, str]:
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
            first = tuple(message.split(" ", 1)[0].split("."))
            if (loc + first) in source.values:  # a cross-field rule names its field (or dotted path) first
                loc = loc + first
        if (
            "input" in err
            and not isinstance(err["input"], (dict, list))
            and kind != "value_error"
            and not is_secret(".".join(map(str, loc)))
        ):
            message += f" (got {err['input']!r})"
        position = _nearest(source.values, loc)
    dotted = ".".join(str(p) for p in loc) or "(spec)"
    return (str(position) if position else f"{_display(path)}:1:1", f"{dotted}: {message}")


def _without_values(problem: str) -> str:
    """A parser message without the values it quotes (a duplicated `password` key would print both)."""
    return re.sub(r'^(found duplicate key ".*?") with value .*$', r"\1", str(problem))


_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="), "less_than": ("lt", "<"), "less_than_equal": ("le", "<=")}


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
    """Discriminator values pydantic inserts into error locations of tagged unions (data.kind, network.arch,
    network.param_stats)."""
    tags = {"param-stats-file", "param-stats-values"}
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
