"""Sliding windows over NCHW tensors without copying (the im2col view used by Conv and the pools)."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided


def pad_spatial(x: np.ndarray, pads: tuple[int, int, int, int], value: int) -> np.ndarray:
    """Pad the last two axes; `pads` = (top, left, bottom, right) in ONNX begin/end order."""
    top, left, bottom, right = pads
    if not any(pads):
        return x
    width = [(0, 0)] * (x.ndim - 2) + [(top, bottom), (left, right)]
    return np.pad(x, width, mode="constant", constant_values=value)


def windows(
    x: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int], dilations: tuple[int, int], out_hw: tuple[int, int]
) -> np.ndarray:
    """A read-only view of shape (N, C, kh, kw, Ho, Wo): element [n, c, i, j, y, x] is
    x[n, c, y*sh + i*dh, x*sw + j*dw] (the input is already padded)."""
    n, c, _, _ = x.shape
    s_n, s_c, s_h, s_w = x.strides
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, strides, dilations, out_hw
    return as_strided(x, shape=(n, c, kh, kw, ho, wo), strides=(s_n, s_c, s_h * dh, s_w * dw, s_h * sh, s_w * sw), writeable=False)
