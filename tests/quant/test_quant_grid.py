"""A PACT quantiser's output lies exactly on its integer grid: y/eps is an integer inside int_range."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qlspec.quant.pact import PACTConv2d, PACTLinear, PACTSignedAct, PACTUnsignedAct, input_quantiser

BITS = [8, 6, 4, 2]


def _assert_on_grid(y: torch.Tensor, eps: torch.Tensor, q_lo: int, q_hi: int) -> torch.Tensor:
    k = y / eps
    assert torch.all((k - k.round()).abs() < 1e-4), "output is not an integer multiple of eps"
    k = k.round()
    assert k.min() >= q_lo and k.max() <= q_hi
    return k


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("signed", [False, True])
def test_activation_output_on_grid_and_floored(bits, signed):
    n = 2**bits
    q = (PACTSignedAct if signed else PACTUnsignedAct)(n_levels=n, init_clip=1.7, act_kind="identity")
    q.started.fill_(True)
    x = torch.linspace(-4, 4, 20001)
    y = q(x)
    eps = q.get_eps()
    q_lo, q_hi = q.int_range
    assert (q_lo, q_hi) == ((-n // 2, n // 2 - 1) if signed else (0, n - 1))
    k = _assert_on_grid(y, eps, q_lo, q_hi)
    assert k.min() == q_lo and k.max() == q_hi  # both ends reached
    lo, hi = q.bounds()
    inside = (x >= lo) & (x < hi)
    # flooring: y <= x < y + eps inside the bounds (float32 division aside)
    slack = 1e-6
    assert torch.all(y[inside] <= x[inside] + slack) and torch.all(x[inside] - y[inside] < eps + 1e-6)
    assert torch.allclose(y[x >= hi], hi.expand_as(y[x >= hi]), atol=1e-6)
    assert eps.item() == pytest.approx(((hi - lo) / (n - 1)).item())
    torch.testing.assert_close(q.to_int(x), k)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("granularity", ["per-channel", "per-layer"])
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_weights_on_grid_and_rounded(bits, granularity, kind):
    n = 2**bits
    torch.manual_seed(bits)
    quant = dict(n_levels=n, granularity=granularity, init="max")
    m = PACTConv2d(8, 5, 3, quant=quant) if kind == "conv" else PACTLinear(8, 5, quant=quant)
    with torch.no_grad():
        m.weight.mul_(torch.logspace(-2, 1, 5).reshape((5,) + (1,) * (m.weight.dim() - 1)))  # very different channel scales
    m.started.fill_(True)
    eps = m.get_eps_w()
    assert eps.shape == ((5,) if granularity == "per-channel" else (1,)) + (1,) * (m.weight.dim() - 1)
    wq = m.weight_q
    k = _assert_on_grid(wq, eps, *m.int_range)
    torch.testing.assert_close(m.weight_int, k)
    # max init, almost symmetric: the most negative weight of each channel is exactly -n/2 * eps
    w = m.weight.detach()
    lo, hi = m.bounds()
    inside = (w >= lo) & (w <= hi)
    assert torch.all((wq - w).abs()[inside] <= (eps / 2 + 1e-7).expand_as(w)[inside])
    assert torch.allclose(eps, 2 * w.abs().amax(dim=m.reduce_dims, keepdim=True) / n)
    assert m.get_eps_out(torch.tensor(0.5)).shape == ((5,) if granularity == "per-channel" else (1,))


@settings(max_examples=200, deadline=None)
@given(
    x=st.floats(-100, 100, allow_nan=False),
    bound=st.floats(0.01, 50),
    bits=st.sampled_from(BITS),
    signed=st.booleans(),
)
def test_activation_matches_its_docstring_formula(x, bound, bits, signed):
    """y = clip(floor(x/eps), q_lo, q_hi)*eps, y = the bound itself for x beyond it (float64)."""
    n = 2**bits
    q = (PACTSignedAct if signed else PACTUnsignedAct)(n_levels=n, init_clip=bound, act_kind="identity").double()
    q.started.fill_(True)
    q.set_bound(torch.tensor(bound, dtype=torch.float64))  # the float64 bound itself, not its float32 rounding
    lo, hi = (-bound, bound * (n - 2) / n) if signed else (0.0, bound)
    eps = (hi - lo) / (n - 1)
    q_lo, q_hi = (-n // 2, n // 2 - 1) if signed else (0, n - 1)
    k = q_hi if x >= hi else q_lo if x < lo else min(max(math.floor(x / eps), q_lo), q_hi)
    y = q(torch.tensor([x], dtype=torch.float64)).item()
    assert y == pytest.approx(k * eps, rel=1e-12, abs=1e-12)


def test_pixel_input_quantiser_is_pixel_minus_128():
    """(p - 127.5)/128 -> floor(x/eps_in) = p - 128 for every uint8 pixel: exact, no clipping."""
    q = input_quantiser(256, 1.0)
    q.started.fill_(True)
    p = torch.arange(256, dtype=torch.float32)
    x = (p - 127.5) / 128
    assert q.get_eps().item() == 1 / 128
    torch.testing.assert_close(q.to_int(x), p - 128)
    torch.testing.assert_close(q(x), (p - 128) / 128)
    assert not q.clip_lo.requires_grad and q.fixed
