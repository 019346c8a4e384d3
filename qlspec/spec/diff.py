"""Semantic diff of two resolved specs, and the stages each change invalidates.

Both specs are compared after `extends:` and defaults are applied, field by field; key order,
comments and spelling of equal values do not matter. A secret field shows only that it changed.
Each change carries its field's effect (`qlspec.spec.effects`): only a result or deployment change
reruns a stage; a speed, access or naming change reruns none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from qlspec.spec.effects import Effect, effect_of, keyed
from qlspec.spec.load import LoadedSpec
from qlspec.spec.models import AppSpec
from qlspec.spec.secrets import is_secret, mask
from qlspec.stages.engine import StageDef, flatten


@dataclass(frozen=True)
class Change:
    """One field that differs; `old`/`new` are None when the field is absent on that side."""

    path: str
    old: Any
    new: Any
    stages: tuple[str, ...]
    effect: Effect


def spec_diff(old: LoadedSpec, new: LoadedSpec, stages: tuple[StageDef, ...]) -> list[Change]:
    a = flatten(old.spec.model_dump(mode="json", by_alias=True, exclude={"extends"}))
    b = flatten(new.spec.model_dump(mode="json", by_alias=True, exclude={"extends"}))
    changes = []
    for path in sorted(set(a) | set(b)):
        if a.get(path) != b.get(path):
            shown = (mask(a.get(path)), mask(b.get(path))) if is_secret(path) else (a.get(path), b.get(path))
            changes.append(Change(path, *shown, invalidated_by(path, stages), effect_of(path)))
    return changes


def invalidated_by(path: str, stages: tuple[StageDef, ...]) -> tuple[str, ...]:
    """Stages that read `path`, and all downstream; none for a field that changes no result (speed,
    access, naming, a secret). A new `name` reruns nothing here, but names another build folder."""
    if not keyed(path):
        return ()
    hit: set[str] = set()
    for stage in stages:
        reads = any(path == r or path.startswith(r + ".") for r in stage.reads)
        if reads or any(up in hit for up in stage.after):
            hit.add(stage.name)
    return tuple(s.name for s in stages if s.name in hit)


def stages_to_rerun(changes: list[Change], stages: tuple[StageDef, ...], spec: AppSpec | None = None) -> list[str]:
    """The stages any change invalidates, in pipeline order; with the new `spec`, only those it runs
    (not deploy when deploy.enabled is false, for one: `skipped` says which were left out and why)."""
    hit = [s for s in stages if any(s.name in c.stages for c in changes)]
    return [s.name for s in hit if spec is None or s.enabled(spec) is None]


def skipped(changes: list[Change], stages: tuple[StageDef, ...], spec: AppSpec) -> list[str]:
    """``"stage (reason)"`` for each invalidated stage the new `spec` does not run."""
    return [f"{s.name} ({why})" for s in stages if any(s.name in c.stages for c in changes) and (why := s.enabled(spec)) is not None]


def rungs_that_may_move(changes: list[Change], stages: tuple[StageDef, ...], spec: AppSpec | None = None) -> list[str]:
    """The report rows written by the stages to rerun, in pipeline order; with the new `spec`, only
    those it produces (ARMCL or CPU by target.backend; BOARD when deploy.enabled)."""
    rerun = set(stages_to_rerun(changes, stages, spec))
    rungs = [r for s in stages if s.name in rerun for r in s.rungs]
    if spec is not None:
        absent = {"ARMCL", "CPU", "BOARD"} - (
            {"ARMCL", "BOARD"} if spec.target.backend == "armcl" else {"CPU"} if spec.target.backend == "cpu" else set()
        )
        rungs = [r for r in rungs if r not in absent]
    return rungs


def rerun_summary(changes: list[Change], stages: tuple[StageDef, ...], spec: AppSpec | None = None) -> str:
    """``"train, quantise; skipped: deploy (deploy.enabled is false)"``, or ``"none"`` (as `qlspec plan`
    words it); without the new `spec`, every invalidated stage."""
    rerun = stages_to_rerun(changes, stages, spec)
    left_out = skipped(changes, stages, spec) if spec is not None else []
    return (", ".join(rerun) or "none") + (f"; skipped: {', '.join(left_out)}" if left_out else "")


def render_markdown(changes: list[Change], stages: tuple[StageDef, ...], title: str = "qlspec diff", spec: AppSpec | None = None) -> str:
    """A table fit for a pull-request comment: each change, what reruns, which rungs may move (of
    those the new `spec` produces, when given)."""
    if not changes:
        return f"**{title}**: no semantic changes.\n"

    def cell(value: Any) -> str:
        text = "_absent_" if value is None else json.dumps(value) if not isinstance(value, str) else value
        return "`" + text.replace("`", "'").replace("|", "\\|").replace("\n", " ")[:120] + "`"

    lines = [f"**{title}**: {len(changes)} change(s)", "", "| field | old | new | changes | invalidates |", "|---|---|---|---|---|"]
    for c in changes:
        lines.append(f"| `{c.path}` | {cell(c.old)} | {cell(c.new)} | {c.effect} | {', '.join(c.stages) or 'none'} |")
    rungs = rungs_that_may_move(changes, stages, spec)
    lines += [
        "",
        f"**Stages to rerun:** {rerun_summary(changes, stages, spec)}",
        "",
        f"**Rungs that may move:** {', '.join(rungs) or 'none'}",
    ]
    return "\n".join(lines) + "\n"
