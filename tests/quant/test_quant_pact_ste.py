"""PACT's straight-through estimator, checked against finite differences.

The STE is, by definition, the derivative of the clipping function clip(x, lo, hi) (PACT; QuantLib's
PACTQuantFunc.backward). So: (1) autograd through the fake-quantiser equals a central finite
difference of the clip surrogate, for the input and for the bounds; (2) on the clipped elements the
fake-quantiser itself has that derivative (its output there is exactly the bound); (3) on the
in-range elements the true derivative w.r.t. hi is q/(n-1) (through eps), which the STE drops.
"""

from __future__ import annotations

import pytest
import torch

from qlspec.quant.pact import PACTConv2d, PACTQuantFunc, PACTSignedAct, PACTUnsignedAct

H = 1e-6


def _x_away_from_edges(n: int, lo: float, hi: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = (lo - 0.5 * (hi - lo)) + 2 * (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)
    keep = ((x - lo).abs() > 1e-3) & ((x - hi).abs() > 1e-3)
    return x[keep]


def _fq(x, lo, hi, n, signed):
    eps = (hi - lo) / (n - 1)
    q_lo, q_hi = (-(n // 2), n // 2 - 1) if signed else (0, n - 1)
    return PACTQuantFunc.apply(x, eps.detach(), lo, hi, q_lo, q_hi, "floor")


@pytest.mark.parametrize("bits", [8, 6, 4, 2])
def test_unsigned_ste_matches_finite_difference_of_clip(bits):
    n = 2**bits
    x = _x_away_from_edges(4000, 0.0, 2.5, seed=bits).requires_grad_(True)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    hi = torch.tensor([2.5], dtype=torch.float64, requires_grad=True)
    lo = torch.zeros(1, dtype=torch.float64)
    (g * _fq(x, lo, hi, n, signed=False)).sum().backward()

    def surrogate(h):
        return float((g * x.detach().clamp(0.0, h)).sum())

    fd_hi = (surrogate(2.5 + H) - surrogate(2.5 - H)) / (2 * H)
    assert hi.grad.item() == pytest.approx(fd_hi, rel=1e-6, abs=1e-6)
    assert hi.grad.item() == pytest.approx(float(g[x.detach() >= 2.5].sum()), rel=1e-12)
    # input: d/dx clip(x) is 1 inside [lo, hi), 0 outside
    fd_x = ((x.detach() + H).clamp(0, 2.5) - (x.detach() - H).clamp(0, 2.5)) / (2 * H) * g
    torch.testing.assert_close(x.grad, fd_x, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bits", [8, 6, 4, 2])
def test_signed_ste_matches_finite_difference_of_clip(bits):
    """Signed: only lo is learned, hi = -lo*(n-2)/n, so dL/dlo = sum_below g - (n-2)/n * sum_above g."""
    n = 2**bits
    q = PACTSignedAct(n_levels=n, init_clip=1.5, act_kind="identity").double()
    q.started.fill_(True)
    lo0 = -1.5
    hi0 = 1.5 * (n - 2) / n
    x = _x_away_from_edges(4000, lo0, hi0, seed=bits).requires_grad_(True)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    (g * q(x)).sum().backward()

    def surrogate(lo):
        return float((g * x.detach().clamp(lo, -lo * (n - 2) / n)).sum())

    fd_lo = (surrogate(lo0 + H) - surrogate(lo0 - H)) / (2 * H)
    assert q.clip_lo.grad.item() == pytest.approx(fd_lo, rel=1e-6, abs=1e-6)
    inside = (x.detach() >= lo0) & (x.detach() < hi0)
    torch.testing.assert_close(x.grad, torch.where(inside, g, torch.zeros_like(g)))


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_clipped_outputs_sit_exactly_on_the_bound(bits):
    """Finite differences of the real fake-quantiser (eps moves with hi) on clipped elements only."""
    n = 2**bits
    x = _x_away_from_edges(2000, 0.0, 2.0, seed=3)
    above = x >= 2.0
    g = torch.where(above, torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4)), torch.zeros_like(x))
    lo = torch.zeros(1, dtype=torch.float64)

    def loss(h):
        return float((g * _fq(x, lo, torch.tensor([h], dtype=torch.float64), n, signed=False)).sum())

    hi = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    (g * _fq(x, lo, hi, n, signed=False)).sum().backward()
    fd = (loss(2.0 + H) - loss(2.0 - H)) / (2 * H)
    assert hi.grad.item() == pytest.approx(fd, rel=1e-6)


def test_in_range_dependence_on_eps_is_what_the_ste_drops():
    """Full finite difference = STE + sum over in-range elements of g*q/(n-1): exactly PACT's approximation."""
    n = 16
    x = _x_away_from_edges(2000, 0.0, 2.0, seed=5)
    g = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    lo = torch.zeros(1, dtype=torch.float64)
    hi = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    (g * _fq(x, lo, hi, n, signed=False)).sum().backward()

    def loss(h):
        return float((g * _fq(x, lo, torch.tensor([h], dtype=torch.float64), n, signed=False)).sum())

    # small enough that no in-range x crosses a level (levels are 2/15 apart, x is >1e-3 from the bounds)
    h = 1e-9
    fd = (loss(2.0 + h) - loss(2.0 - h)) / (2 * h)
    inside = x < 2.0
    q = torch.clamp(torch.floor(x / (2.0 / (n - 1))), 0, n - 1)
    dropped = float((g * q / (n - 1))[inside].sum())
    assert fd == pytest.approx(hi.grad.item() + dropped, rel=1e-4)


@pytest.mark.parametrize("granularity", ["per-channel", "per-layer"])
def test_weight_clip_gradient_per_channel_matches_finite_difference(granularity):
    n = 16
    conv = PACTConv2d(
        4, 6, 3, bias=False, quant=dict(n_levels=n, granularity=granularity, learn_clip=True, init="const", init_clip=0.2)
    ).double()
    torch.nn.init.normal_(conv.weight, std=0.15)
    conv.started.fill_(True)
    g = torch.randn(conv.weight.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    (g * conv.weight_q).sum().backward()
    w = conv.weight.detach()
    lo0 = conv.clip_lo.detach().clone()

    def surrogate(lo):
        return (g * torch.maximum(torch.minimum(w, -lo * (n - 2) / n), lo)).sum(dim=conv.reduce_dims, keepdim=True)

    fd = (surrogate(lo0 + H) - surrogate(lo0 - H)) / (2 * H)
    assert conv.clip_lo.grad.shape == lo0.shape
    torch.testing.assert_close(conv.clip_lo.grad, fd, rtol=1e-5, atol=1e-6)
    # the weight's own STE gradient is g inside the bounds, 0 outside
    lo, hi = conv.bounds()
    inside = (w >= lo) & (w < hi)
    torch.testing.assert_close(conv.weight.grad, torch.where(inside, g, torch.zeros_like(g)))


def test_unsigned_module_learns_its_bound():
    q = PACTUnsignedAct(n_levels=256, init_clip=1.0)
    q.started.fill_(True)
    x = torch.linspace(-1, 3, 1001)
    q(x).sum().backward()
    assert q.clip_hi.grad.item() == pytest.approx(float((x >= 1.0).sum()))
