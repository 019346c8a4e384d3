"""`qlspec.npz.read_npz` on hostile .npz files (`infer --inputs/--expect`, ``network.param_stats``):
the arrays, or one `QlspecError` located at the file; never another exception, never an allocation
the file's data cannot fill."""

from __future__ import annotations

import io
import re
import zipfile
from typing import Any

import numpy as np
import pytest
from fuzzing import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qlspec.errors import QlspecError
from qlspec.npz import read_npz

DTYPES = ["i1", "u1", "<i2", ">i4", "<i8", "<f4", ">f8", "?", "<U3", "<c8"]


def npz_of(arrays: dict[str, np.ndarray], compressed: bool = False) -> bytes:
    buf = io.BytesIO()
    save: Any = np.savez_compressed if compressed else np.savez
    save(buf, **arrays)
    return buf.getvalue()


def announcing(shape: tuple[int, ...], name: str = "x") -> bytes:
    """An .npz (a valid archive) whose array `name` announces `shape` of int64 in its header but holds
    the data of a (1, 4) array."""
    npy = io.BytesIO()
    np.save(npy, np.zeros((1, 4), np.int64))
    raw = npy.getvalue()
    m = re.search(rb"\{'descr'[^\n]*\n", raw)
    assert m is not None
    header = ("{'descr': '<i8', 'fortran_order': False, 'shape': " + repr(shape) + ", }").encode()
    assert len(header) < len(m.group(0))
    raw = raw[: m.start()] + header.ljust(len(m.group(0)) - 1) + b"\n" + raw[m.end() :]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(f"{name}.npy", raw)
    return out.getvalue()


@pytest.mark.parametrize("shape", [(2**40,), (2**33,), (2**31, 2**31), (0,), (1, 5)])
def test_a_header_announcing_more_or_less_than_the_data_is_refused_before_allocating(tmp_path, shape):
    f = tmp_path / "bomb.npz"
    f.write_bytes(announcing(shape))
    with pytest.raises(QlspecError) as e:
        read_npz(f)
    assert e.value.where == str(f) and "announces" in e.value.message


def test_object_arrays_and_oversized_files_are_refused(tmp_path):
    f = tmp_path / "objects.npz"
    np.savez(f, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(QlspecError, match="Python objects"):
        read_npz(f)
    g = tmp_path / "big.npz"
    np.savez(g, x=np.zeros(1000, np.int64))
    with pytest.raises(QlspecError, match="more than the 7,999"):
        read_npz(g, limit_bytes=7_999)
    assert read_npz(g, limit_bytes=8_000)["x"].shape == (1000,)


def test_not_an_npz(tmp_path):
    npy = tmp_path / "a.npy"
    np.save(npy, np.zeros(3))
    for path, message in [(npy, "an .npy array"), (tmp_path / "missing.npz", "no such file"), (tmp_path, "is a folder")]:
        with pytest.raises(QlspecError, match=message):
            read_npz(path)


arrays = st.dictionaries(
    st.text(st.characters(codec="ascii", exclude_characters="/\\\x00"), min_size=1, max_size=6),
    st.tuples(st.sampled_from(DTYPES), st.lists(st.integers(0, 4), max_size=3)),
    max_size=3,
)


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    content=arrays,
    compressed=st.booleans(),
    cut=st.one_of(st.none(), st.integers(0, 4000)),
    flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=4),
    bomb=st.one_of(st.none(), st.lists(st.integers(0, 2**62), min_size=1, max_size=3).map(tuple)),
)
def test_mutated_files_read_back_or_fail_located(tmp_path, content, compressed, cut, flips, bomb):
    made = {k: np.zeros(shape, dtype) for k, (dtype, shape) in content.items()}
    data = bytearray(announcing(bomb) if bomb is not None else npz_of(made, compressed))
    for at, value in flips:
        if at < len(data):
            data[at] = value
    if cut is not None:
        del data[cut:]
    f = tmp_path / "in.npz"
    f.write_bytes(bytes(data))
    try:
        got = read_npz(f)
    except QlspecError as e:
        assert e.where == str(f) and "\n" not in e.message
        return
    if bomb is None and cut is None and not flips:
        assert got.keys() == made.keys()
        for k, v in made.items():
            assert got[k].dtype == v.dtype and got[k].shape == v.shape
    for v in got.values():
        assert isinstance(v, np.ndarray)


def test_a_member_that_is_not_an_array_is_refused(tmp_path):
    f = tmp_path / "odd.npz"
    with zipfile.ZipFile(f, "w") as z:
        z.writestr("x.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': 'garbage")
    with pytest.raises(QlspecError, match="not an .npy array"):
        read_npz(f)
