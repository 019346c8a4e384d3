"""The generated runner (qlspec-net) fed hostile files, as a user on the board could: truncated,
mutated or foreign .npy inputs, a wrong weights blob, bad flags; its graph's names are hostile too
(quotes, newlines, trigraphs, control characters), and must reach the C++ only as escaped literals. Every outcome is a clean run or
one error line with exit status 2, never a crash, a hang or an out-of-bounds read."""

from __future__ import annotations

import io
import subprocess

import numpy as np
import pytest
from armcl_helpers import Built, node
from fuzzing import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qlspec.graph.ir import TensorInfo, make_graph

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    c = {"w": np.arange(-20, 16, dtype=np.int8).reshape(4, 1, 3, 3), "m": np.array(3, np.int32), "a": np.array(1, np.int32)}
    # names from a user's file that would end a C++ string, comment or line if pasted into the code
    x, y = 'x"\n); abort(); //', "y\\\n??/\x01\u00e9"
    g = make_graph(
        'g"\n*/',
        {x: TensorInfo((1, 1, 5, 5), 8, True)},
        [node("ConvRequant", "c\n}; abort(); //??/", [x, "w", "", "m", "a"], [y], div=16, lo=-128, hi=127, pads=(1, 1, 1, 1))],
        c,
        [y],
    )
    return Built(g, tmp_path_factory.mktemp("hostile") / "armcl")


def run(built, tmp_path, *args):
    cmd = [*built.tc.run_prefix(), str(built.binary), "--out", str(tmp_path), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def assert_clean(r):
    assert r.returncode in (0, 2), (r.returncode, r.stderr)
    if r.returncode == 2:
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("qlspec-net: "), r.stderr


VALID = npy_bytes(np.zeros((3, 1, 5, 5), np.int8))


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    cut=st.integers(0, len(VALID)),
    flips=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=6),
    tail=st.binary(max_size=40),
)
def test_mutated_inputs_are_refused_cleanly(built, tmp_path, cut, flips, tail):
    data = bytearray(VALID[:cut])
    for i, v in flips:
        if i < len(data):
            data[i] = v
    f = tmp_path / "x.npy"
    f.write_bytes(bytes(data) + tail)
    assert_clean(run(built, tmp_path, f))


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((2, 1, 5, 5), np.int16), "dtype"),
        (np.zeros((2, 1, 5, 4), np.int8), "shape"),
        (np.zeros((5,), np.int8), "shape"),
        (np.zeros((1, 1, 5, 5), np.float32), "dtype"),
    ],
)
def test_foreign_inputs_name_the_problem(built, tmp_path, array, message):
    np.save(tmp_path / "x.npy", array)
    r = run(built, tmp_path, tmp_path / "x.npy")
    assert_clean(r)
    assert r.returncode == 2 and message in r.stderr


def test_wrong_weights_and_flags(built, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 5, 5), np.int8))
    (tmp_path / "w.bin").write_bytes(b"\0" * 10)
    for args, message in (
        (["--weights", tmp_path / "w.bin"], "this network needs"),
        (["--weights", tmp_path / "none.bin"], "cannot open"),
        (["--threads", "0"], "--threads"),
        (["--threads", "x"], "needs an integer"),
        (["--repeat"], "needs a value"),
        ([], "expected 1 input"),
    ):
        extra = [] if message == "expected 1 input" else [tmp_path / "x.npy"]
        r = run(built, tmp_path, *extra, *args)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
        assert_clean(r)
    ok = run(built, tmp_path, tmp_path / "x.npy")
    assert ok.returncode == 0 and np.load(tmp_path / "output_0.npy").shape == (1, 4, 5, 5)


def test_profile_times_every_node(built):
    from qlspec.codegen.build import run_binary

    x = np.zeros((3, 1, 5, 5), np.int8)
    r = run_binary(built.binary, [x], built.tc, repeat=2, profile=True)
    assert [n["kernel"] for n in r.node_ms] == list(built.lowered.kernels.values()) == ["acl-gemmlowp"]
    assert r.node_ms[0]["ms_per_batch"] > 0 and r.median_ms > 0
