"""RequantShift against its docstring: hand-checkable vectors and a property test."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qlspec.engine.ops import RequantShift
from qlspec.errors import GraphError
from qlspec.graph.ir import levels_range


def rq(x, mul, add, div, lo=-128, hi=127):
    return RequantShift(div=div, lo=lo, hi=hi).run(np.asarray(x, np.int32), np.asarray(mul), np.asarray(add))


def test_half_rounds_up_toward_plus_infinity():
    # div = 4: x/4 for x = -10..10; halves: -6/4 = -1.5 -> -1, -2/4 -> 0, 2/4 -> 1, 6/4 -> 2, 10/4 -> 3
    x = np.arange(-10, 11)
    want = [-2, -2, -2, -2, -1, -1, -1, -1, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3]
    assert rq(x, 1, 0, 4).tolist() == want


def test_hand_vectors_with_mul_add_and_saturation():
    # (x*mul + add + 8) // 16 with mul = 3, add = -5: x = 10 -> 33 // 16 = 2; x = 1000 -> 3003 // 16 = 187 -> 127
    assert rq([10, 1000, -1000, 0], 3, -5, 16).tolist() == [2, 127, -128, 0]
    assert rq([10, 1000, -1000, 0], 3, -5, 16, lo=0, hi=255).tolist() == [2, 187, 0, 0]


def test_per_channel_parameters_broadcast_on_axis_1():
    x = np.arange(2 * 3 * 2 * 2).reshape(2, 3, 2, 2) - 12
    mul = np.array([1, 2, 3]).reshape(3, 1, 1)
    add = np.array([0, 4, -4]).reshape(3, 1, 1)
    got = rq(x, mul, add, 8)
    want = np.floor((x * mul + add + 4) / 8).astype(int).clip(-128, 127)
    assert np.array_equal(got, want)
    assert got[0, 1, 0, 0] == (-8 * 2 + 4 + 4) // 8  # channel 1 of the first image: -1


def test_per_column_parameters_of_a_gemm():
    x = np.array([[100, 100], [-100, -100]])
    got = rq(x, np.array([1, 3]), np.array([0, 0]), 64, lo=0, hi=255)
    assert got.tolist() == [[2, 5], [0, 0]]  # (100+32)//64 = 2, (300+32)//64 = 5


def test_div_one_adds_nothing():
    assert rq([5, -5], 7, 1, 1, lo=-1000, hi=1000).tolist() == [36, -34]


@settings(max_examples=300, deadline=None)
@given(
    x=st.integers(-(2**31), 2**31 - 1),
    mul=st.integers(-(2**31), 2**31 - 1),
    add=st.integers(-(2**31), 2**31 - 1),
    shift=st.integers(0, 30),
    signed=st.booleans(),
    n=st.sampled_from([2, 4, 16, 255, 256, 65536]),
)
def test_matches_the_scalar_formula(x, mul, add, shift, signed, n):
    lo, hi = levels_range(n, signed)
    div = 1 << shift
    want = min(max((x * mul + add + div // 2) // div, lo), hi)  # Python ints: exact floor
    assert rq([x], mul, add, div, lo, hi)[0] == want


def test_levels_range_follows_quantlib():
    assert levels_range(256, True) == (-128, 127)
    assert levels_range(256, False) == (0, 255)
    assert levels_range(255, True) == (-128, 127)  # round(127.5) = 128, half to even
    assert levels_range(3, True) == (-2, 1)  # round(1.5) = 2


def test_div_must_be_a_power_of_two():
    with pytest.raises(GraphError, match="power of two"):
        RequantShift(div=12, lo=0, hi=1)
