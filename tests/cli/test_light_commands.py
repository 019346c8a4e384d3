"""`plan`, `diff` and `validate` read specs without the numerical stack: they stay fast in review and CI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DEFAULT_APP = Path(__file__).resolve().parents[2] / "examples" / "3ddfa-synthetic" / "app.yaml"
HEAVY = {"numpy", "torch", "matplotlib", "onnx", "onnxruntime", "scipy", "fabric", "paramiko", "cookiecutter", "PIL"}


@pytest.mark.parametrize(
    "args",
    [
        ("plan", DEFAULT_APP),
        ("diff", DEFAULT_APP, DEFAULT_APP),
        ("validate", DEFAULT_APP),
        ("diff", DEFAULT_APP, DEFAULT_APP, "--format", "markdown"),
    ],
)
def test_command_imports_no_heavy_package(args, tmp_path):
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "qlspec", *map(str, args)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "qlspec.spec.load" in imported and not imported & HEAVY, sorted(imported & HEAVY)
