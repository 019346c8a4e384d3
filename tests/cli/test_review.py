"""Specs in review: `qlspec diff --format markdown`, `--against REV`, the git diff driver, and
`qlspec validate` over several files (the pre-commit hook), in real git repositories."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def qlspec(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qlspec", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def git(*args, cwd: Path) -> str:
    r = subprocess.run(["git", *args], capture_output=True, text=True, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture()
def repo(tmp_path) -> Path:
    """A git repository holding a copy of the default example and the spec it extends, committed."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    app = tmp_path / "apps" / "face"
    app.mkdir(parents=True)
    (app / "base.yaml").write_text("training: {epochs: 3, batch_size: 32}\n")
    (app / "app.yaml").write_text(
        "apiVersion: qlspec/v1\nname: face\nextends: [base.yaml, boards/rpi4.yaml]\n"
        "data: {kind: synthetic, train: 200, val: 80}\ndeploy: {password: old-secret}\n"
    )
    git("init", "-q", cwd=tmp_path)
    git("-c", "user.email=t@t", "-c", "user.name=t", "add", ".", cwd=tmp_path)
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "first", cwd=tmp_path)
    return tmp_path


def test_against_a_revision_resolves_extends_as_they_were(repo):
    app = repo / "apps" / "face"
    (app / "base.yaml").write_text("training: {epochs: 9, batch_size: 32}\n")  # the fragment changes, not app.yaml
    r = qlspec("diff", "--against", "HEAD", "apps/face/app.yaml", cwd=repo)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith("training.epochs: 3 -> 9   invalidates: train, quantise")
    assert r.stdout.splitlines()[-1] == (
        "1 change(s); stages to rerun: train, quantise, export, convert, build, verify; "
        "skipped: compare (compare.algorithms is empty), deploy (deploy.enabled is false)"
    )
    assert qlspec("diff", "--against", "HEAD", "apps/face/app.yaml", "--format", "json", cwd=repo).stdout.count('"path"') == 1
    bad = qlspec("diff", "--against", "no-such-rev", "apps/face/app.yaml", cwd=repo)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --against no-such-rev:") and len(bad.stderr.splitlines()) == 1
    dashed = qlspec("diff", "--against=--output=/tmp/x", "apps/face/app.yaml", cwd=repo)
    assert dashed.returncode == 2 and "not a revision" in dashed.stderr


def test_markdown_lists_changes_stages_and_rungs(repo):
    app = repo / "apps" / "face"
    (app / "new.yaml").write_text(
        (app / "app.yaml").read_text().replace("val: 80", "val: 90").replace("old-secret", "new-secret")
        + "target: {output_stage: armcl-native}\n"
    )
    r = qlspec("diff", "apps/face/app.yaml", "apps/face/new.yaml", "--format", "markdown", cwd=repo)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "**qlspec diff**: 3 change(s)" and lines[2] == "| field | old | new | changes | invalidates |"
    assert "| `data.val` | `80` | `90` | result | data, train, quantise, compare, export, convert, build, verify, deploy |" in lines
    assert "| `deploy.password` | `<secret>` | `<secret>` | access | none |" in lines and "secret" not in r.stdout.replace("<secret>", "")
    assert "| `target.output_stage` | `exact` | `armcl-native` | result | build, verify, deploy |" in lines
    assert lines[-3] == (  # the stages this spec runs: not compare nor deploy, which it skips
        "**Stages to rerun:** data, train, quantise, export, convert, build, verify; "
        "skipped: compare (compare.algorithms is empty), deploy (deploy.enabled is false)"
    )
    assert lines[-1] == "**Rungs that may move:** MEAN, FP, FQ, FQI, TQ, ONNX, GRAPH, ARMCL"  # no CPU, no BOARD (deploy off)
    (app / "on.yaml").write_text((app / "new.yaml").read_text().replace("deploy: {", "deploy: {enabled: true, "))
    on = qlspec("diff", "apps/face/app.yaml", "apps/face/on.yaml", "--format", "markdown", cwd=repo).stdout.splitlines()
    assert (
        on[-3]
        == "**Stages to rerun:** data, train, quantise, export, convert, build, verify, deploy; skipped: compare (compare.algorithms is empty)"
    )
    assert on[-1].endswith("GRAPH, ARMCL, BOARD")
    same = qlspec("diff", "apps/face/app.yaml", "apps/face/app.yaml", "--format", "markdown", cwd=repo)
    assert same.stdout == "**qlspec diff**: no semantic changes.\n"


def test_plain_git_diff_shows_the_stage_impact_through_the_driver(repo):
    (repo / ".gitattributes").write_text("*.yaml diff=qlspec\n")
    git("config", "diff.qlspec.command", f"{sys.executable} -m qlspec diff --git", cwd=repo)
    app = repo / "apps" / "face" / "app.yaml"
    app.write_text(app.read_text().replace("train: 200", "train: 400") + "# a comment only\n")
    out = git("--no-pager", "diff", cwd=repo)
    assert "qlspec diff apps/face/app.yaml" in out
    assert "data.train: 200 -> 400   invalidates: data, train" in out and "1 change(s)" in out
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "more data", cwd=repo)
    shown = git("--no-pager", "show", "--ext-diff", "HEAD", cwd=repo)  # between two commits, too
    assert "data.train: 200 -> 400" in shown
    assert not list(app.parent.glob(".qlspec-*"))  # the driver's temporary copies are gone


def test_validate_takes_several_specs_and_reports_every_error(repo):
    app = repo / "apps" / "face"
    (app / "bad.yaml").write_text("apiVersion: qlspec/v1\nname: Bad Name\n")
    r = qlspec("validate", "apps/face/app.yaml", "apps/face/bad.yaml", cwd=repo)
    assert r.returncode == 2 and r.stdout.startswith("ok: apps/face/app.yaml")
    assert r.stderr.startswith("error: apps/face/bad.yaml:2:7: name:")
    hooks = (ROOT / ".pre-commit-hooks.yaml").read_text()
    assert "id: qlspec-validate" in hooks and "entry: qlspec validate" in hooks


def test_examples_and_new_apps_point_editors_at_the_schema(tmp_path):
    for app in (ROOT / "examples").glob("*/app.yaml"):
        first = app.read_text().splitlines()[0]
        assert (
            first == "# yaml-language-server: $schema=../../specs/app.schema.json"
            and (app.parent / "../../specs/app.schema.json").is_file()
        )
    r = qlspec("new", "--no-input", "name=schemed", "-o", tmp_path, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    folder = tmp_path / "schemed"
    assert (folder / "app.yaml").read_text().startswith("# yaml-language-server: $schema=app.schema.json\n")
    assert json.loads((folder / "app.schema.json").read_text())["title"]
