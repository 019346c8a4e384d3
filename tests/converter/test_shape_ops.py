"""The small ops: Add, Concat, Clip, Pad, Flatten, Reshape, Transpose, Quantise, RequantAdd."""

from __future__ import annotations

import numpy as np
import pytest

from qlspec.engine.ops import Add, Clip, Concat, Flatten, Pad, Quantise, RequantAdd, Reshape, Transpose
from qlspec.errors import GraphError
from qlspec.graph.ir import TensorInfo


def test_add_never_saturates_and_types_the_range():
    a = np.array([127, -128], np.int8)
    assert Add().run(a, a).tolist() == [254, -256]
    (t,) = Add().infer([TensorInfo((2,), 8, True), TensorInfo((2,), 8, True)], [None, None])
    assert (t.bits, t.signed, t.dtype) == (9, True, np.dtype(np.int16))


def test_concat_negative_axis_and_mixed_types():
    a, b = np.zeros((1, 2, 2), np.uint8) + 255, np.zeros((1, 1, 2), np.int8) - 1
    assert Concat(axis=-2).run(a, b).tolist() == [[[255, 255], [255, 255], [-1, -1]]]
    (t,) = Concat(axis=-2).infer([TensorInfo((1, 2, 2), 8, False), TensorInfo((1, 1, 2), 8, True)], [None, None])
    assert (t.shape, t.bits, t.signed) == ((1, 3, 2), 9, True)


def test_clip_and_its_type():
    assert Clip(lo=0, hi=6).run(np.array([-3, 3, 9])).tolist() == [0, 3, 6]
    (t,) = Clip(lo=0, hi=6).infer([TensorInfo((3,), 8, True)], [None])
    assert (t.bits, t.signed) == (3, False)


def test_pad_modes():
    x = np.array([[1, 2, 3]], np.int8)
    assert Pad(pads=(0, 1, 0, 2), value=-7).run(x).tolist() == [[-7, 1, 2, 3, -7, -7]]
    assert Pad(pads=(0, 1, 0, 1), mode="edge").run(x).tolist() == [[1, 1, 2, 3, 3]]
    assert Pad(pads=(0, 1, 0, 1), mode="reflect").run(x).tolist() == [[2, 1, 2, 3, 2]]


def test_flatten_reshape_transpose():
    x = np.arange(24).reshape(2, 3, 2, 2)
    assert Flatten(axis=1).run(x).shape == (2, 12)
    assert np.array_equal(Reshape(shape=(0, -1, 4)).run(x), x.reshape(2, 3, 4))
    assert np.array_equal(Transpose(perm=(0, 2, 3, 1)).run(x), x.transpose(0, 2, 3, 1))


def test_quantise_rounds_half_to_even_in_float32():
    x = np.array([0.5, 1.5, 2.5, -0.5, -2.6, 1000.0], np.float32)
    assert Quantise(eps=1.0, lo=-128, hi=127).run(x).tolist() == [0, 2, 2, 0, -3, 127]
    assert Quantise(eps=0.25, lo=-128, hi=127).run(np.array([0.3, 0.375], np.float32)).tolist() == [1, 2]


def test_quantise_floors_in_float32_when_asked():
    x = np.array([0.5, 1.5, 2.999, -0.5, -2.6, 1000.0, -1000.0], np.float32)
    assert Quantise(eps=1.0, lo=-128, hi=127, rounding="floor").run(x).tolist() == [0, 1, 2, -1, -3, 127, -128]
    pixels = np.arange(256, dtype=np.float32)  # the default normalisation and eps 1/128: p -> p - 128, all 256 kept apart
    got = Quantise(eps=1 / 128, lo=-128, hi=127, rounding="floor").run((pixels - np.float32(127.5)) / np.float32(128))
    assert got.tolist() == list(range(-128, 128))
    with pytest.raises(GraphError, match="rounding must be one of"):
        Quantise(eps=1.0, lo=0, hi=1, rounding="ceil")


def test_requant_add_matches_the_dory_formula():
    rng = np.random.default_rng(5)
    x1 = rng.integers(0, 256, 1000)
    x2 = rng.integers(0, 256, 1000)
    # DORY attributes: in*_add already holds the half (2^18 for shift 19); the IR's add does not
    p = dict(in1_mul=245015, in1_add=262144, in1_shift=19, in2_mul=265342, in2_add=262144, in2_shift=19)
    op = RequantAdd(
        lo=0, hi=255, in1_mul=245015, in1_add=0, in1_div=1 << 19, in1_rq=True, in2_mul=265342, in2_add=0, in2_div=1 << 19, in2_rq=True
    )
    want = [
        min(max((int(a) * p["in1_mul"] + p["in1_add"]) // 2**19 + (int(b) * p["in2_mul"] + p["in2_add"]) // 2**19, 0), 255)
        for a, b in zip(x1, x2)
    ]
    assert op.run(x1, x2).tolist() == want
    op_out = RequantAdd(lo=0, hi=255, out_rq=True, out_mul=3, out_add=-2, out_div=4)
    assert op_out.run(np.array([5, 200]), np.array([1, 100])).tolist() == [min((6 * 3 - 2 + 2) // 4, 255), 225]
