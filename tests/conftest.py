"""Shared fixtures: the repository root, the shared folder with the real QuantLab exports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root() -> Path:
    return ROOT


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def spec_file(tmp_path: Path):
    """Write a spec file under tmp_path and return its path."""

    def make(text: str, name: str = "app.yaml") -> Path:
        return write(tmp_path / name, text)

    return make


@pytest.fixture(autouse=True)
def _quiet_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
