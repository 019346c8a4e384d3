"""Conv, grouped and depthwise, with pads, strides and dilations, against torch in float64
(exact for these small integers) as an independent oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qlspec.engine.ops import Conv


def torch_conv(x, w, b, strides, pads, dilations, group):
    t, left, btm, r = pads
    xt = torch.nn.functional.pad(torch.tensor(x, dtype=torch.float64), (left, r, t, btm))
    y = torch.nn.functional.conv2d(
        xt,
        torch.tensor(w, dtype=torch.float64),
        None if b is None else torch.tensor(b, dtype=torch.float64),
        stride=strides,
        dilation=dilations,
        groups=group,
    )
    return y.numpy().astype(np.int64)


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
