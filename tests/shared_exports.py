"""Where the real QuantLab/Deeploy exports are: ../shared/quantlab-exports next to the repository,
or $QLSPEC_SHARED/quantlab-exports. Read in place, never copied; tests skip when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def shared_exports() -> Path:
    root = os.environ.get("QLSPEC_SHARED")
    base = Path(root) if root else Path(__file__).resolve().parents[1] / ".." / "shared"
    return (base / "quantlab-exports").resolve()


def shared_cases() -> list:
    """One pytest param per case folder holding a network.onnx (a single skipped param if none)."""
    folder = shared_exports() / "deeploy"
    cases = sorted(p for p in folder.glob("*") if (p / "network.onnx").is_file()) if folder.is_dir() else []
    if not cases:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"shared QuantLab exports not found at {folder}"))]
    return [pytest.param(p, id=p.name) for p in cases]
