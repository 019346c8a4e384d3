"""Clipping-bound estimators shared by initialisation (QAT) and calibration (PTQ).

Every function returns a *magnitude* (a positive bound) with the shape the caller asks for by
`dims`: the dimensions reduced over. Symmetric signed tensors turn a magnitude ``m`` into
QuantLib's "almost symmetric" bounds with `almost_symmetric_bounds`.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Smallest bound any estimator returns, so that eps never becomes 0 (a dead ReLU has max 0).
MIN_BOUND = 1e-6


def almost_symmetric_bounds(max_abs: Tensor, n_levels: int) -> tuple[Tensor, Tensor]:
    """QuantLib's ``almost_symm_quant``: ``lo = -m``, ``hi = m*(n-2)/n`` for even ``n``.

    Then ``eps = (hi - lo)/(n - 1) = 2m/n`` and ``lo/eps = -n/2``: the grid holds 0 and the
    integer range is ``[-n/2, n/2 - 1]`` (int8: -128..127) with zero point 0.
    """
    if n_levels % 2:
        raise ValueError(f"n_levels must be even (got {n_levels})")
    return -max_abs, max_abs * (n_levels - 2) / n_levels


def max_abs(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """``max |x|`` over `dims` (keepdim), at least `MIN_BOUND`."""
    return x.detach().abs().amax(dim=dims, keepdim=True).clamp_min(MIN_BOUND)


def std_bound(x: Tensor, dims: tuple[int, ...], nb_std: float) -> Tensor:
    """``|mean| + nb_std * std`` over `dims` (keepdim; std with Bessel's correction where n > 1)."""
    x = x.detach()
    n = 1
    for d in dims:
        n *= x.shape[d]
    std = x.std(dim=dims, keepdim=True) if n > 1 else torch.zeros_like(x.amax(dim=dims, keepdim=True))
    return (x.mean(dim=dims, keepdim=True).abs() + nb_std * std).clamp_min(MIN_BOUND)


def percentile_abs(x: Tensor, dims: tuple[int, ...], percentile: float) -> Tensor:
    """The `percentile`-th percentile (in %) of ``|x|`` over `dims` (keepdim; linear interpolation)."""
    x = x.detach().abs()
    kept = [d for d in range(x.dim()) if d not in dims]
    flat = x.permute(*kept, *dims).reshape(*[x.shape[d] for d in kept], -1)
    q = torch.quantile(flat.float(), percentile / 100.0, dim=-1)
    shape = [1 if d in dims else x.shape[d] for d in range(x.dim())]
    return q.reshape(shape).clamp_min(MIN_BOUND)


def mse_bound(
    x: Tensor,
    dims: tuple[int, ...],
    n_levels: int,
    signed: bool,
    floor: bool,
    steps: int = 90,
) -> Tensor:
    """The bound minimising ``mean((q(x) - x)**2)`` over `dims`, searched as in QuantLib's ``mse_bounds``.

    Candidates are ``max|x| * (1 - i/100)`` for ``i = 0..steps-1`` (100% down to 11% of the max);
    ``q`` is the quantiser the bound will be used with: almost-symmetric when `signed`, else
    ``[0, hi]``; flooring when `floor`, else rounding. Ties keep the larger bound.
    """
    x = x.detach()
    top = max_abs(x, dims)
    best = top.clone()
    best_err = torch.full_like(top, float("inf"))
    q_lo, q_hi = (-(n_levels // 2), n_levels // 2 - 1) if signed else (0, n_levels - 1)
    for i in range(steps):
        m = top * (1 - i / 100.0)
        eps = 2 * m / n_levels if signed else m / (n_levels - 1)
        v = x / eps
        q = (torch.floor(v) if floor else torch.round(v)).clamp(q_lo, q_hi)
        err = ((q * eps - x) ** 2).mean(dim=dims, keepdim=True)
        better = err < best_err
        best = torch.where(better, m, best)
        best_err = torch.where(better, err, best_err)
    return best.clamp_min(MIN_BOUND)
