"""MaxPool, SumPool, GlobalSumPool against torch (float64: exact for these integers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qlspec.engine.ops import GlobalSumPool, MaxPool, SumPool


@pytest.mark.parametrize(
    "k,s,p,d,ceil",
    [
        ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False),
        ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), False),
        ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), True),
        ((2, 3), (1, 2), (0, 1, 0, 1), (2, 1), False),
    ],
)
def test_max_pool_matches_torch(k, s, p, d, ceil):
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (2, 3, 9, 10)).astype(np.int8)
    got = MaxPool(kernel_shape=k, strides=s, pads=p, dilations=d, ceil_mode=ceil).run(x)
    want = torch.nn.functional.max_pool2d(torch.tensor(x, dtype=torch.float64), k, s, (p[0], p[1]), d, ceil_mode=ceil)
    assert got.dtype == np.int8
    assert np.array_equal(got, want.numpy())


def test_max_pool_padding_never_wins():
    x = np.full((1, 1, 2, 2), -128, np.int8)
    assert MaxPool(kernel_shape=(2, 2), pads=(1, 1, 1, 1)).run(x).tolist() == [[[[-128] * 3] * 3]]


def test_sum_pool_is_the_window_sum():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (2, 3, 8, 8)).astype(np.uint8)
    got = SumPool(kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1)).run(x)
    want = torch.nn.functional.avg_pool2d(torch.tensor(x, dtype=torch.float64), 3, 2, 1, divisor_override=1)
    assert np.array_equal(got, want.numpy())
    assert GlobalSumPool().run(x).tolist() == x.astype(np.int64).sum(axis=(2, 3), keepdims=True).tolist()
