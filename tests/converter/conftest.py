"""Fixtures for the converter tests."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest


@pytest.fixture
def write_onnx(tmp_path):
    """write_onnx(model, name='m.onnx') -> Path of the serialised model under tmp_path."""

    def write(model: onnx.ModelProto, name: str = "m.onnx") -> Path:
        p = tmp_path / name
        p.write_bytes(model.SerializeToString())
        return p

    return write
