"""Conv, grouped and depthwise, with pads, strides and dilations, against torch in float64
(exact for these small integers) as an independent oracle."""

from __future__ import annotations

import numpy as np
import pytest
from conv_reference import requant_formula, torch_conv

from qlspec.engine.ops import Conv


@pytest.mark.parametrize(
    "c,m,group,k,strides,pads,dilations",
    [
        (3, 4, 1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
        (4, 6, 2, (3, 2), (2, 1), (0, 1, 2, 0), (1, 1)),  # grouped, asymmetric everything
        (5, 5, 5, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),  # depthwise, stride 2
        (4, 8, 4, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2)),  # depthwise with channel multiplier 2, dilated
        (6, 3, 1, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),  # pointwise
    ],
)
def test_conv_matches_torch(c, m, group, k, strides, pads, dilations):
    rng = np.random.default_rng(c * 100 + m)
    x = rng.integers(-128, 128, (2, c, 9, 8)).astype(np.int8)
    w = rng.integers(-128, 128, (m, c // group, *k)).astype(np.int8)
    b = rng.integers(-5000, 5000, m).astype(np.int32)
    op = Conv(strides=strides, pads=pads, dilations=dilations, group=group)
    got = op.run(x, w, b)
    assert np.array_equal(got, torch_conv(x, w, b, strides, pads, dilations, group))
    assert np.array_equal(op.run(x, w), torch_conv(x, w, None, strides, pads, dilations, group))


def test_wide_inputs_take_the_exact_int64_path():
    # |x| ~ 2^30 and |w| ~ 2^7 with K = 27: float64 would not be exact, int64 is
    x = np.full((1, 3, 3, 3), (1 << 30) + 1, np.int64)
    w = np.full((1, 3, 3, 3), 127, np.int64)
    got = Conv().run(x, w)
    assert got.item() == 27 * ((1 << 30) + 1) * 127


@pytest.mark.parametrize(
    "c,width,k,strides,pads,dilations",
    [
        (3, 37, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),  # three column blocks, the last one partial
        (4, 40, (3, 3), (2, 2), (0, 1, 2, 0), (1, 1)),  # strided, asymmetric padding
        (2, 33, (3, 5), (1, 2), (2, 4, 2, 4), (2, 2)),  # dilated, wide kernel
        (5, 16, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),  # one tap
    ],
)
def test_depthwise_on_wide_inputs_matches_torch(c, width, k, strides, pads, dilations):
    rng = np.random.default_rng(width)
    x = rng.integers(0, 256, (3, c, 7, width)).astype(np.uint8)
    w = rng.integers(-128, 128, (c, 1, *k)).astype(np.int8)
    b = rng.integers(-5000, 5000, c).astype(np.int32)
    op = Conv(strides=strides, pads=pads, dilations=dilations, group=c)
    assert np.array_equal(op.run(x, w, b), torch_conv(x, w, b, strides, pads, dilations, c))


@pytest.mark.parametrize(
    "group,k,x_range,mul_bits,div,lo,hi",
    [
        (1, (1, 1), (0, 256), 12, 1 << 20, 0, 255),  # pointwise, float32 products, float64 requantisation
        (6, (3, 3), (0, 256), 12, 1 << 18, -128, 127),  # depthwise, signed output (the floor is not a truncation)
        (2, (3, 3), (-128, 128), 12, 1 << 16, -8, 7),  # grouped, 4-bit output
        (1, (3, 3), (-(1 << 15), 1 << 15), 14, 1 << 24, 0, 255),  # wide inputs: float64 products
        (6, (3, 3), (0, 256), 40, 1 << 40, -128, 127),  # |acc * mul| beyond 2**53: the int64 requantisation
    ],
)
def test_conv_requant_matches_its_two_docstrings(group, k, x_range, mul_bits, div, lo, hi):
    from qlspec.engine.ops import ConvRequant

    rng = np.random.default_rng(mul_bits + div.bit_length())
    c = m = 6
    x = rng.integers(*x_range, (2, c, 9, 21))
    w = rng.integers(-128, 128, (m, c // group, *k))
    b = rng.integers(-5000, 5000, m)
    mul = rng.integers(1, 1 << mul_bits, (m, 1, 1))
    add = rng.integers(-div * 64, div * 64, (m, 1, 1))
    pads = (k[0] // 2, k[1] // 2, k[0] // 2, k[1] // 2)
    op = ConvRequant(div=div, lo=lo, hi=hi, pads=pads, strides=(1, 2), group=group)
    acc = torch_conv(x, w, b, (1, 2), pads, (1, 1), group)  # float64: exact below 2**53
    got = op.run(x, w, b, mul, add)
    want = requant_formula(acc, np.broadcast_to(mul[None], acc.shape), np.broadcast_to(add[None], acc.shape), div, lo, hi)
    assert np.array_equal(got, want)
    assert 0 < ((want == lo) | (want == hi)).sum() < want.size  # some values clipped, some not
