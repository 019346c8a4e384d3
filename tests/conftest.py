"""Shared fixtures: the repository root, the shared folder with the real QuantLab exports."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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
