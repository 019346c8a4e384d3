"""Semantic diff of two resolved specs, and the stages each change invalidates.

Both specs are compared after `extends:` and defaults are applied, field by field; key order,
comments and spelling of equal values do not matter. A secret field shows only that it changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qlspec.spec.load import LoadedSpec
from qlspec.spec.secrets import is_secret, mask
from qlspec.stages.engine import StageDef, flatten


@dataclass(frozen=True)
class Change:
    """One field that differs; `old`/`new` are None when the field is absent on that side."""

    path: str
    old: Any
    new: Any
    stages: tuple[str, ...]


def spec_diff(old: LoadedSpec, new: LoadedSpec, stages: tuple[StageDef, ...]) -> list[Change]:
    a = flatten(old.spec.model_dump(mode="json", by_alias=True, exclude={"extends"}))
    b = flatten(new.spec.model_dump(mode="json", by_alias=True, exclude={"extends"}))
    changes = []
    for path in sorted(set(a) | set(b)):
        if a.get(path) != b.get(path):
            shown = (mask(a.get(path)), mask(b.get(path))) if is_secret(path) else (a.get(path), b.get(path))
            changes.append(Change(path, *shown, invalidated_by(path, stages)))
    return changes


def invalidated_by(path: str, stages: tuple[StageDef, ...]) -> tuple[str, ...]:
    """Stages that read `path` (the name of the app invalidates every stage), and all downstream; none
    for a secret, which only changes how the board is reached."""
    if is_secret(path):
        return ()
    hit: set[str] = set()
    for stage in stages:
        reads = path == "name" or any(path == r or path.startswith(r + ".") for r in stage.reads)
        if reads or any(up in hit for up in stage.after):
            hit.add(stage.name)
    return tuple(s.name for s in stages if s.name in hit)
