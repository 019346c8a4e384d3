"""The stage engine on small stages of the test's own: keys, reasons, atomic outputs, resume."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from qlspec.spec.load import load_spec
from qlspec.stages.engine import Pipeline, StageDef


class Recorder:
    """Stage bodies that write a file derived from their inputs and count their runs."""

    def __init__(self) -> None:
        self.runs: list[str] = []
        self.fail: str | None = None

    def stage(self, name: str):
        def run(ctx):
            self.runs.append(name)
            upstream = "".join((p / "out.txt").read_text() for p in ctx.inputs.values())
            (ctx.out / "out.txt").write_text(upstream + f"{name}({ctx.spec.training.epochs})")
            if self.fail == name:
                raise RuntimeError("boom")

        return run


def pipeline(spec_path: Path, build: Path, rec: Recorder, third_available: bool = True) -> Pipeline:
    stages = (
        StageDef("data", "d", reads=("data",), after=(), run=rec.stage("data")),
        StageDef("train", "t", reads=("training",), after=("data",), run=rec.stage("train")),
        StageDef("quantise", "q", reads=("quantisation",), after=("train",), run=rec.stage("quantise") if third_available else None),
        StageDef("export", "e", reads=("export",), after=("quantise",), run=None),
    )
    return Pipeline(stages, load_spec(spec_path).spec, spec_path, build)


def run_all(p: Pipeline, **kw):
    for status in p.plan(**kw):
        if status.state == "will run":
            p.run_stage(status, progress=False, log=lambda s: None)


def states(p: Pipeline, **kw):
    return {s.stage.name: (s.state, s.reasons) for s in p.plan(**kw)}


@pytest.fixture
def setup(spec_file, tmp_path):
    path = spec_file("name: demo\ntraining: {epochs: 2}\n")
    return path, tmp_path / "build", Recorder()


def test_first_plan_runs_everything_available(setup):
    path, build, rec = setup
    st = states(pipeline(path, build, rec))
    assert st["data"] == ("will run", ("never run",))
    assert st["quantise"][0] == "will run"
    assert st["export"] == ("not available yet", ("built by a later release",))


def test_second_apply_is_a_no_op(setup):
    path, build, rec = setup
    run_all(pipeline(path, build, rec))
    assert rec.runs == ["data", "train", "quantise"]
    p = pipeline(path, build, rec)
    assert [s.state for s in p.plan()][:3] == ["up to date"] * 3
    run_all(p)
    assert rec.runs == ["data", "train", "quantise"]
    assert (build / "demo" / "quantise" / "out.txt").read_text() == "data(2)train(2)quantise(2)"


def test_changing_a_field_reruns_its_stage_and_everything_after(setup):
    path, build, rec = setup
    run_all(pipeline(path, build, rec))
    path.write_text("name: demo\ntraining: {epochs: 3}\n")
    st = states(pipeline(path, build, rec))
    assert st["data"][0] == "up to date"
    assert st["train"] == ("will run", ("training.epochs modified: 2 -> 3",))
    assert st["quantise"] == ("will run", ("upstream train will run",))
    run_all(pipeline(path, build, rec))
    assert rec.runs[3:] == ["train", "quantise"]


def test_force_and_until(setup):
    path, build, rec = setup
    run_all(pipeline(path, build, rec))
    st = states(pipeline(path, build, rec), force=["data"], until="train")
    assert st["data"] == ("will run", ("forced (--force data)",))
    assert st["train"] == ("will run", ("upstream data will run",))
    assert st["quantise"] == ("skipped", ("after --until train",))


def test_a_failing_stage_leaves_the_previous_outputs_intact(setup):
    path, build, rec = setup
    run_all(pipeline(path, build, rec))
    before = (build / "demo" / "train" / "out.txt").read_text()
    path.write_text("name: demo\ntraining: {epochs: 5}\n")
    rec.fail = "train"
    with pytest.raises(RuntimeError):
        run_all(pipeline(path, build, rec))
    assert (build / "demo" / "train" / "out.txt").read_text() == before
    record = json.loads((build / "demo" / "train" / "stage.json").read_text())
    assert record["spec"]["training.epochs"] == 2
    assert states(pipeline(path, build, rec))["train"][0] == "will run"


def test_deleted_output_makes_the_stage_stale(setup):
    path, build, rec = setup
    run_all(pipeline(path, build, rec))
    (build / "demo" / "data" / "out.txt").unlink()
    assert states(pipeline(path, build, rec))["data"] == ("will run", ("outputs missing or modified: out.txt",))


def test_same_size_edit_of_an_output_makes_the_stage_stale(setup):
    path, build, rec = setup
    run_all(pipeline(path, build, rec))
    out = build / "demo" / "data" / "out.txt"
    text = out.read_text()
    time.sleep(0.01)
    out.write_text(text[:-1] + ("x" if text[-1] != "x" else "y"))  # same size, other bytes, newer than the record
    assert states(pipeline(path, build, rec))["data"] == ("will run", ("outputs missing or modified: out.txt",))
    out.write_text(text)  # the recorded bytes again: up to date, whatever the mtime says
    assert states(pipeline(path, build, rec))["data"][0] == "up to date"


def test_resumable_stage_finds_its_partial_folder_again(spec_file, tmp_path):
    path = spec_file("name: demo\n")
    attempts = []

    def flaky(ctx):
        attempts.append(sorted(p.name for p in ctx.out.iterdir()))
        (ctx.out / "checkpoint").write_text("epoch 1")
        if len(attempts) == 1:
            raise KeyboardInterrupt

    stage = StageDef("train", "t", reads=("training",), after=(), run=flaky, resumable=True)
    p = Pipeline((stage,), load_spec(path).spec, path, tmp_path / "build")
    with pytest.raises(KeyboardInterrupt):
        run_all(p)
    run_all(p)
    assert attempts == [[], ["checkpoint"]]
    assert (tmp_path / "build" / "demo" / "train" / "checkpoint").is_file()


def test_secrets_are_not_in_keys_or_records(spec_file, tmp_path):
    path = spec_file("name: demo\ndeploy: {password: hunter2}\n")
    stage = StageDef("deploy", "d", reads=("deploy",), after=(), run=lambda ctx: None)
    p = Pipeline((stage,), load_spec(path).spec, path, tmp_path / "build")
    run_all(p)
    text = (tmp_path / "build" / "demo" / "deploy" / "stage.json").read_text()
    assert "hunter2" not in text and "deploy.password" not in text and "sha256:" not in text
    assert "deploy.host" in text  # what is not secret is recorded


def test_a_disabled_stage_skips_its_consumers(spec_file, tmp_path):
    path = spec_file("name: demo\n")
    rec = Recorder()
    stages = (
        StageDef("data", "d", reads=("data",), after=(), run=rec.stage("data")),
        StageDef(
            "quantise", "q", reads=(), after=("data",), run=rec.stage("quantise"), enabled=lambda spec: "quantisation.algorithm is none"
        ),
        StageDef("export", "e", reads=(), after=("quantise",), run=rec.stage("export")),
    )
    p = Pipeline(stages, load_spec(path).spec, path, tmp_path / "build")
    run_all(p)
    assert rec.runs == ["data"]
    st = states(p)
    assert st["quantise"] == ("skipped", ("quantisation.algorithm is none",))
    assert st["export"] == ("skipped", ("upstream quantise skipped",))


def test_code_edited_while_a_stage_runs_leaves_it_stale(spec_file, tmp_path, monkeypatch):
    path = spec_file("name: demo\n")
    version = {"code": "v1"}

    def body(ctx):
        version["code"] = "v2"  # someone edits the stage's source while it trains

    stage = StageDef("train", "t", reads=("training",), after=(), run=body)
    monkeypatch.setattr(Pipeline, "code_digest", lambda self, s: version["code"])
    p = Pipeline((stage,), load_spec(path).spec, path, tmp_path / "build")
    run_all(p)
    assert json.loads((tmp_path / "build" / "demo" / "train" / "stage.json").read_text())["code"] == "v1"
    assert states(p)["train"] == ("will run", ("code changed",))
