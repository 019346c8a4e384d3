"""House style, checked with the suite: ruff's lint rules and formatter, and mypy, clean on the whole
tree (configured in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "command",
    [("ruff", "check", "--no-cache", "."), ("ruff", "format", "--check", "--no-cache", "."), ("mypy",)],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_tree_is_clean(command, tmp_path):
    extra = ("--cache-dir", str(tmp_path / "mypy-cache")) if command[0] == "mypy" else ()
    r = subprocess.run([sys.executable, "-m", *command, *extra], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
