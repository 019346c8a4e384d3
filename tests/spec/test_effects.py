"""Field effects: only result-changing fields reach stage keys, and diff and plan agree on every field."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from qlspec.spec.diff import invalidated_by
from qlspec.spec.effects import Effect, declared_effects, effect_of, keyed
from qlspec.spec.load import load_spec
from qlspec.stages.engine import Pipeline
from qlspec.stages.registry import STAGES

DEFAULT_APP = Path(__file__).resolve().parents[2] / "examples" / "3ddfa-synthetic" / "app.yaml"
DEFAULT = load_spec(DEFAULT_APP).spec


def keys(p: Pipeline) -> dict[str, str | None]:
    return {s.stage.name: s.key for s in p.plan()}


def test_every_declared_effect_is_known_and_the_obvious_ones_are_declared():
    assert set(declared_effects().values()) <= set(typing.get_args(Effect))
    expect = {
        "name": "naming",
        "description": "naming",
        "training.threads": "speed",
        "training.device": "speed",
        "training.precision": "speed",
        "training.compile": "speed",
        "training.loader.workers": "speed",
        "training.loader.pin_memory": "speed",
        "training.distributed.processes": "speed",
        "training.distributed.backend": "speed",
        "training.distributed.master_port": "speed",
        "target.threads": "speed",
        "deploy.host": "deployment",
        "deploy.key": "access",
        "deploy.password": "access",
        "deploy.command_timeout": "access",
        "training.optimizer.lr": "result",
        "network.width": "result",
        "target.output_stage": "result",
    }
    assert {path: effect_of(path) for path in expect} == expect
    assert not keyed("deploy.password") and keyed("deploy.path") and not keyed("training.threads")
    assert not keyed("training.distributed.processes") and not keyed("training.device") and keyed("training.batch_size")


@pytest.mark.parametrize("path", sorted(Pipeline(STAGES, DEFAULT, DEFAULT_APP, Path("/nonexistent")).resolved))
def test_diff_and_plan_agree_on_every_field(path, tmp_path):
    """Changing any one field of the default app changes exactly the keys of the stages `diff` names."""
    p = Pipeline(STAGES, DEFAULT, DEFAULT_APP, tmp_path)
    before = keys(p)
    names_a_file = any(path in s.files for s in STAGES)  # digested by content: name a file that exists
    p.resolved[path] = str(DEFAULT_APP) if names_a_file else ["a value no field holds", path]
    after = keys(p)
    changed = {name for name in before if before[name] != after[name]}
    assert changed == set(invalidated_by(path, STAGES)), f"{path} ({effect_of(path)})"
    assert bool(changed) == keyed(path)


def test_a_speed_or_naming_change_leaves_a_built_app_up_to_date(tmp_path):
    """On disk: the same build folder, a spec differing in threads, description and ssh key only."""
    text = DEFAULT_APP.read_text()
    other = tmp_path / "app.yaml"
    other.write_text(
        text.replace("  threads: 2", "  threads: 1")
        .replace("description: 3DDFA", "description: renamed 3DDFA")
        .replace("key: ~/.ssh/id_ed25519", "key: ~/.ssh/elsewhere")
    )  # extends: names in the spec library
    a = Pipeline(STAGES, load_spec(DEFAULT_APP).spec, DEFAULT_APP, tmp_path / "build")
    b = Pipeline(STAGES, load_spec(other).spec, other, tmp_path / "build")
    assert a.resolved != b.resolved and keys(a) == keys(b)
