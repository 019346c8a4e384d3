"""`PACTQuantFunc` against a plain statement of its docstring, forward and backward, on generated input.

With one bound per tensor the function runs the fused C kernel (`pact_native`) or, without it,
torch: it skips per-element work where the bounds prove it a no-op and reads the backward mask from
the saved input through PyTorch's hardtanh/threshold kernels; per-channel bounds keep masks. Every
path must give exactly what the docstring says: codes
``clip(rule(x/eps))`` pinned to ``q_hi`` where ``x >= hi`` and ``q_lo`` where ``x < lo``, the input's
gradient where ``lo <= x < hi``, and the bounds' gradients summed where ``x < lo`` / ``x >= hi``
(sums to within their float summation error: torch and the kernel add in different orders).
Inputs include the bounds themselves, their float neighbours and infinities.
"""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qlspec.quant import pact_native
from qlspec.quant.pact import RULES, PACTQuantFunc, round_by

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _reference(x, eps, lo, hi, q_lo, q_hi, rule, g):
    """The docstring, element by element with masks: (y, dL/dx, dL/dlo, dL/dhi) for loss sum(g*y),
    the bounds' gradients summed in float64."""
    below, above = x < lo, x >= hi
    q = round_by(x / eps, rule).clamp(q_lo, q_hi)
    q = torch.where(above, torch.full_like(q, q_hi), torch.where(below, torch.full_like(q, q_lo), q))
    zero = torch.zeros((), dtype=g.dtype)
    grad_x = torch.where(below | above, zero, g)
    g64 = g.double()
    return q * eps, grad_x, torch.where(below, g64, 0.0).sum_to_size(lo.shape), torch.where(above, g64, 0.0).sum_to_size(hi.shape)


def _assert_sum_close(got: torch.Tensor, want: torch.Tensor, g: torch.Tensor) -> None:
    """`got` (in g's dtype) within the rounding error of summing g's values in any order."""
    bound = g.numel() * torch.finfo(g.dtype).eps * g.double().abs().sum() + torch.finfo(g.dtype).tiny
    assert got.dtype == g.dtype
    assert (got.double() - want).abs().max() <= bound, (got, want)


def _edges(dtype, lo: float, hi: float) -> list[float]:
    """The bounds, the floats either side of them, and the infinities, in `dtype`."""
    out = [math.inf, -math.inf, 0.0]
    for b in (lo, hi):
        t = torch.tensor(b, dtype=dtype)
        out += [
            t.item(),
            torch.nextafter(t, torch.tensor(math.inf, dtype=dtype)).item(),
            torch.nextafter(t, torch.tensor(-math.inf, dtype=dtype)).item(),
        ]
    return out


@pytest.mark.parametrize("kernel", ["native", "torch"])
@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    bits=st.sampled_from([2, 4, 8]),
    signed=st.booleans(),
    rule=st.sampled_from(RULES),
    dtype=st.sampled_from(sorted(DTYPES)),
    per_channel=st.booleans(),
)
def test_function_is_its_docstring(kernel, data, bits, signed, rule, dtype, per_channel):
    dt = DTYPES[dtype]
    n = 2**bits
    q_lo, q_hi = (-(n // 2), n // 2 - 1) if signed else (0, n - 1)
    channels = 3 if per_channel else 1
    m = data.draw(st.lists(st.floats(1e-3, 1e3), min_size=channels, max_size=channels), label="bounds")
    shape = (channels, 1) if per_channel else (1,)
    if signed:
        lo = -torch.tensor(m, dtype=dt).reshape(shape)
        hi = lo * (-(n - 2) / n)
    else:
        lo = torch.zeros(shape, dtype=dt)
        hi = torch.tensor(m, dtype=dt).reshape(shape)
    eps = (hi - lo) / (n - 1)
    edges = [e for c in range(channels) for e in _edges(dt, lo.flatten()[c].item(), hi.flatten()[c].item())]
    values = data.draw(
        st.lists(st.one_of(st.floats(-2e3, 2e3, allow_nan=False), st.sampled_from(edges)), min_size=1, max_size=40), label="x"
    )
    x = torch.tensor(values, dtype=dt).reshape(1, -1).expand(channels, -1).clone()
    g = torch.randn(x.shape, dtype=dt, generator=torch.Generator().manual_seed(len(values)))

    xr = x.clone().requires_grad_(True)
    lor = lo.clone().requires_grad_(True)
    hir = hi.clone().requires_grad_(True)
    with pact_native.disabled() if kernel == "torch" else contextlib.nullcontext():
        y = PACTQuantFunc.apply(xr, eps, lor, hir, q_lo, q_hi, rule)
        (g * y).sum().backward()
    y_ref, gx_ref, glo_ref, ghi_ref = _reference(x, eps, lo, hi, q_lo, q_hi, rule, g)
    assert torch.equal(y, y_ref)
    assert torch.equal(xr.grad, gx_ref)
    _assert_sum_close(lor.grad, glo_ref, g)
    _assert_sum_close(hir.grad, ghi_ref, g)


def test_a_bound_whose_code_rounds_below_the_last_level_is_still_pinned():
    """hi/eps rounding to just under q_hi (floor rule) is the case the clamp alone would miss."""
    found = 0
    for i in range(1, 2000):
        hi = torch.tensor([i / 97], dtype=torch.float32)
        eps = hi / 255
        if torch.floor(hi / eps).item() >= 255:
            continue
        found += 1
        x = torch.cat([hi, torch.nextafter(hi, torch.tensor(math.inf)), hi * 2])
        y = PACTQuantFunc.apply(x, eps, torch.zeros(1), hi, 0, 255, "floor")
        assert torch.equal(y, torch.full_like(x, 255) * eps)
    assert found > 100  # the case is common: about half of all bounds
