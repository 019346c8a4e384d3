"""PTQ calibration sets sensible bounds from data, without a gradient step."""

from __future__ import annotations

import pytest
import torch
from quant_toys import TinyMobileNet, blob_data

from qlspec.quant import QuantConfig, calibrate, float_to_fake
from qlspec.quant.controllers import clip_parameters, weight_quantisers

X, _, _ = blob_data(256, seed=3)
BATCHES = [X[i : i + 64] for i in range(0, 256, 64)]


def _float_net():
    torch.manual_seed(0)
    net = TinyMobileNet()
    net.eval()
    return net


def _site_values(net, name):
    """All float outputs of ReLU call site `name` (module after f2f) on the calibration batches."""
    fq = float_to_fake(net, QuantConfig(), X[:2])
    fq.eval()
    vals = []
    h = fq.get_submodule(name).register_forward_hook(lambda m, i, o: vals.append(o.detach().flatten()))
    with torch.no_grad():
        for b in BATCHES:
            fq(b)
    h.remove()
    return torch.cat(vals)


def test_minmax_is_the_observed_max_and_weights_max_abs():
    net = _float_net()
    fq = float_to_fake(net, QuantConfig(), X[:2])
    bounds = calibrate(fq, BATCHES, method="minmax", floor_bias_correction=False)
    for site in ("relu", "dw2.relu_1", "dw4.relu"):
        assert bounds[site][1] == pytest.approx(_site_values(net, site).max().item(), rel=1e-6)
        assert bounds[site][0] == 0.0
    assert bounds["input_quant"] == (-1.0, 127 / 128)  # fixed, not calibrated
    conv = fq.get_submodule("dw3.conv_sep")
    w = conv.weight.detach()
    torch.testing.assert_close(-conv.clip_lo.detach(), w.abs().amax(dim=(1, 2, 3), keepdim=True))
    assert all(bool(m.started) and bool(m.frozen) for m in weight_quantisers(fq))
    assert not any(p.requires_grad for p in clip_parameters(fq))


def test_percentile_and_mse_bounds_lie_inside_the_range():
    net = _float_net()
    b_max = calibrate(float_to_fake(net, QuantConfig(act_bits=4), X[:2]), BATCHES, "minmax")
    b_pct = calibrate(float_to_fake(net, QuantConfig(act_bits=4), X[:2]), BATCHES, "percentile", percentile=99.0)
    b_mse = calibrate(float_to_fake(net, QuantConfig(act_bits=4), X[:2]), BATCHES, "mse")
    vals = _site_values(net, "dw3.relu")
    want = torch.quantile(vals[torch.randperm(vals.numel(), generator=torch.Generator().manual_seed(0))[: 2**16]], 0.99).item()
    assert b_pct["dw3.relu"][1] == pytest.approx(want, rel=0.05)  # sampled, not exact
    for site in b_max:
        if site == "input_quant":
            continue
        assert 0 < b_pct[site][1] <= b_max[site][1] * (1 + 1e-6)
        assert 0.1 * b_max[site][1] <= b_mse[site][1] <= b_max[site][1] * (1 + 1e-6)
    # at 4 bits the MSE-optimal bound clips something somewhere
    assert any(b_mse[s][1] < 0.99 * b_max[s][1] for s in b_max if s != "input_quant")


def test_calibration_takes_no_gradient_step_and_floor_correction_equals_rounding():
    net = _float_net()
    fq = float_to_fake(net, QuantConfig(fold_bn=True), X[:2])
    weights_before = {n: p.detach().clone() for n, p in fq.named_parameters() if n.endswith("weight")}
    calibrate(fq, BATCHES, "minmax")
    for n, p in fq.named_parameters():
        if n.endswith("weight"):
            assert torch.equal(p, weights_before[n]), n
    rounded = float_to_fake(net, QuantConfig(fold_bn=True, act_rounding=True), X[:2])
    calibrate(rounded, BATCHES, "minmax")
    with torch.no_grad():
        a, b = fq(X), rounded(X)
    # floor((x + eps/2)/eps) == round(x/eps) except at exact .5 ties and float noise
    assert (a - b).abs().max() < 0.05 * b.abs().max()
    assert (a - b).abs().mean() < 1e-3 * b.abs().mean() + 1e-6


def test_no_batches_is_an_error():
    fq = float_to_fake(_float_net(), QuantConfig(), X[:2])
    with pytest.raises(ValueError, match="no calibration batches"):
        calibrate(fq, [], "minmax")
