"""Shared fixtures: the repository root, spec files, one torch thread, the tiny application built once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_app import apply_tiny

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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny nets gain nothing from threads, and OpenMP threads on a busy machine can be 50x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_app(tmp_path_factory):
    """(folder, result of `qlspec apply`) of the tiny application (tests/tiny_app.py), applied once
    per session. Read-only: a module that runs anything on it works on `copy_tiny_app` of it."""
    root = tmp_path_factory.mktemp("tiny-app")
    r = apply_tiny(root)
    assert r.returncode == 0, r.stdout + r.stderr
    return root, r
