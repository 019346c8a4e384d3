"""Torn and crafted checkpoints and pickles: one located error, never a traceback, never code run."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch
from fuzzing import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qlspec.errors import QlspecError
from qlspec.face.bfm import param_stats_from_file, read_trusted_pickle
from qlspec.nets import registry
from qlspec.nets.checkpoint import load_3ddfa_checkpoint

FRAME_BOMB = b"\x80\x04\x95" + (2**62).to_bytes(8, "little") + b"}\x94."  # a 2**62-byte frame in 14 bytes


def _valid_pickle() -> bytes:
    return pickle.dumps({"u": np.arange(6, dtype=np.float32).reshape(6, 1), "w": [[1.0, 2.0]]}, protocol=4)


def _valid_checkpoint() -> bytes:
    torch.manual_seed(0)
    state = {"module." + k: v for k, v in registry.build("3ddfa-mobilenet-v1", 0.25).state_dict().items()}
    buf = io.BytesIO()
    torch.save({"epoch": 1, "state_dict": state}, buf)
    return buf.getvalue()


_CKPT: list[bytes] = []


def mutated(data: bytes, cut: int | None, flips: list[tuple[int, int]]) -> bytes:
    b = bytearray(data[:cut] if cut is not None else data)
    for pos, value in flips:
        if b:
            b[pos % len(b)] = value
    return bytes(b)


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cut=st.none() | st.integers(0, 400),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    raw=st.none() | st.binary(max_size=64),
)
def test_pickles_load_or_fail_with_a_located_error(tmp_path, cut, flips, raw):
    path = tmp_path / "bfm.pkl"
    path.write_bytes(raw if raw is not None else mutated(_valid_pickle(), cut, flips))
    try:
        out = read_trusted_pickle(path)
    except QlspecError as e:
        assert "bfm.pkl" in str(e)
        return
    assert all(isinstance(v, np.ndarray) for v in out.values())


def test_a_frame_bomb_is_refused_quickly(tmp_path):
    path = tmp_path / "bomb.pkl"
    path.write_bytes(FRAME_BOMB)
    with pytest.raises(QlspecError, match="not a pickle of numpy arrays"):
        read_trusted_pickle(path)


def test_a_code_running_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    marker = tmp_path / "ran"
    path.write_bytes(pickle.dumps(type("E", (), {"__reduce__": lambda self: (open, (str(marker), "w"))})()))
    with pytest.raises(QlspecError):
        read_trusted_pickle(path)
    assert not marker.exists()


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.none() | st.integers(0, 200_000), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6))
def test_checkpoints_load_or_fail_with_a_located_error(tmp_path, cut, flips):
    if not _CKPT:
        _CKPT.append(_valid_checkpoint())
    path = tmp_path / "mb.pth"
    path.write_bytes(mutated(_CKPT[0], cut, flips))
    try:
        load_3ddfa_checkpoint(registry.build("3ddfa-mobilenet-v1", 0.25), path)
    except QlspecError as e:
        assert "mb.pth" in str(e)


def _valid_param_stats(suffix: str) -> bytes:
    mean, std = np.zeros(62, np.float32), np.ones(62, np.float32)
    if suffix == ".pkl":
        return pickle.dumps({"mean": mean, "std": std}, protocol=4)
    buf = io.BytesIO()
    np.savez(buf, mean=mean, std=std)
    return buf.getvalue()


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    suffix=st.sampled_from([".pkl", ".npz"]),
    cut=st.none() | st.integers(0, 1200),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
)
def test_output_normalisation_files_load_or_fail_with_a_located_error(tmp_path, suffix, cut, flips):
    path = tmp_path / f"param_mean_std{suffix}"
    path.write_bytes(mutated(_valid_param_stats(suffix), cut, flips))
    try:
        stats = param_stats_from_file(path)
    except QlspecError as e:
        assert path.name in str(e)
        return
    assert stats.mean.shape == stats.std.shape == (62,) and np.isfinite(stats.mean).all() and (stats.std > 0).all()
