"""Convolution and requantisation computed independently of the engine: the oracles of its tests."""

from __future__ import annotations

import numpy as np
import torch


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


def requant_formula(acc, mul, add, div, lo, hi):
    """RequantShift's docstring in Python integers, one value at a time."""
    out = [
        min(max((int(a) * int(m) + int(d) + div // 2) // div, lo), hi)
        for a, m, d in np.nditer([acc, mul, add], flags=["refs_ok"], order="C")
    ]
    return np.array(out, np.int64).reshape(acc.shape)
