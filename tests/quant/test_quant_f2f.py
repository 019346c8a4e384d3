"""float_to_fake on MobileNet-like nets: every module replaced, shared ReLUs untied, still trains."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from quant_toys import TinyMobileNet
from torch import fx, nn

from qlspec.quant import PACTController, QuantConfig, float_to_fake
from qlspec.quant.pact import PACT_ACTIVATIONS, PACTConv2d, PACTIntegerAdd, PACTIntegerConcat, PACTLinear, PACTSignedAct, PACTUnsignedAct


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = TinyMobileNet()
    net.eval()
    for m in net.modules():  # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return net


X = torch.randn(4, 3, 24, 24).clamp(-1, 127 / 128)


def test_every_module_replaced_and_relus_untied():
    net = _net()
    fq = float_to_fake(net, QuantConfig(), X)
    assert isinstance(fq, fx.GraphModule) and type(fq).__name__ == "TinyMobileNet"
    plain = [n for n, m in fq.named_modules() if type(m) in (nn.Conv2d, nn.Linear, nn.ReLU, nn.ReLU6)]
    assert plain == []
    mods = dict(fq.named_modules())
    assert isinstance(mods["conv1"], PACTConv2d) and isinstance(mods["fc"], PACTLinear)
    assert isinstance(mods["dw2.conv_dw"], PACTConv2d) and mods["dw2.conv_dw"].groups == 8
    # DepthWiseBlock calls its one ReLU twice: two quantisers, at its name and <name>_1
    assert isinstance(mods["dw2.relu"], PACTUnsignedAct) and isinstance(mods["dw2.relu_1"], PACTUnsignedAct)
    assert mods["dw2.relu"] is not mods["dw2.relu_1"]
    assert isinstance(mods["input_quant"], PACTSignedAct) and mods["input_quant"].fixed
    assert isinstance(mods["avgpool_quant"], PACTUnsignedAct)  # pooled ReLU outputs are >= 0
    assert isinstance(mods["bn1"], nn.BatchNorm2d)  # BN stays for F2T
    # each act quantiser is called exactly once
    calls = [n.target for n in fq.graph.nodes if n.op == "call_module" and isinstance(mods[n.target], PACT_ACTIVATIONS)]
    assert len(calls) == len(set(calls)) == 1 + 1 + 3 * 2 + 1
    # the float net is untouched and the fake net computes the same until started
    assert all(type(m) is not PACTConv2d for m in net.modules())
    with torch.no_grad():
        torch.testing.assert_close(fq(X), net(X))


def test_started_net_runs_forward_and_backward():
    fq = float_to_fake(_net(), QuantConfig(weight_bits=4, act_bits=4), X)
    fq.train()
    PACTController(fq, start_epoch=0)(0, fq)
    out = fq(X)
    out.square().mean().backward()
    for name, p in fq.named_parameters():
        if p.requires_grad and "clip" not in name:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # learned activation bounds receive gradients (some are clipped with const init 6 ... or none are)
    assert fq.get_submodule("relu").clip_hi.grad is not None
    assert not fq.get_submodule("input_quant").clip_lo.requires_grad


def test_fold_bn_option_removes_batchnorm_and_keeps_the_function():
    net = _net()
    fq = float_to_fake(net, QuantConfig(fold_bn=True), X)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fq.modules())
    fq.eval()
    with torch.no_grad():
        torch.testing.assert_close(fq(X), net(X), rtol=1e-4, atol=1e-5)


class _Functional(nn.Module):
    """Functional ReLUs, a conv straight after a BN (no activation), flatten."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4 * 22 * 22, 2)

    def forward(self, x):
        x = self.bn(self.c1(x))
        x = F.relu(self.c2(x))
        return self.fc(torch.flatten(x, 1))


def test_functional_relu_and_back_to_back_linears():
    fq = float_to_fake(_Functional().eval(), QuantConfig(), X)
    mods = dict(fq.named_modules())
    assert isinstance(mods["relu"], PACTUnsignedAct)  # F.relu became a module
    assert isinstance(mods["c2_in_quant"], PACTSignedAct)  # BN output feeding c2 gets a signed quantiser
    assert "fc_in_quant" not in mods  # flatten keeps the ReLU's grid


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return x + self.c(x)


class _Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return torch.cat([x, self.c(x)], 1)


class _Product(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return x * self.c(x)


def test_residual_add_and_concat_are_harmonised_and_a_product_refused_clearly():
    net = _Residual().eval()
    fq = float_to_fake(net, QuantConfig(), X)
    (add,) = [m for m in fq.modules() if isinstance(m, PACTIntegerAdd)]
    assert isinstance(add.act_in, PACTSignedAct)  # one quantiser for both inputs: one grid
    with torch.no_grad():
        torch.testing.assert_close(fq(X), net(X))  # float mode until quantisation starts
    PACTController(fq, start_epoch=0, calibration_batches=[X])(0, fq)
    with torch.no_grad():
        y = fq(X)
    eps = add.act_in.get_eps()
    got = {}
    h = add.register_forward_hook(lambda m, i, o: got.setdefault("sum", o))
    with torch.no_grad():
        fq(X)
    h.remove()
    codes = got["sum"] / eps
    assert torch.allclose(codes, codes.round(), atol=1e-3)  # the sum of two codes on one grid
    assert y.shape == X.shape
    fq = float_to_fake(_Concat(), QuantConfig(), X)
    (cat,) = [m for m in fq.modules() if isinstance(m, PACTIntegerConcat)]
    assert cat.dim == 1 and isinstance(cat.act_in, PACTSignedAct)
    with pytest.raises(NotImplementedError, match="products are not"):
        float_to_fake(_Product(), QuantConfig(), X)


@pytest.mark.skipif(importlib.util.find_spec("qlspec.nets.mobilenet_v1") is None, reason="qlspec.nets.mobilenet_v1 not written yet")
def test_converts_the_3ddfa_mobilenet():
    from qlspec.nets.mobilenet_v1 import MobileNetV1

    torch.manual_seed(0)
    net = MobileNetV1(0.25).eval()
    x = (torch.randint(0, 256, (2, 3, 120, 120)).float() - 127.5) / 128
    fq = float_to_fake(net, QuantConfig(), x)
    assert [n for n, m in fq.named_modules() if type(m) in (nn.Conv2d, nn.Linear, nn.ReLU, nn.ReLU6)] == []
    n_convs = sum(isinstance(m, nn.Conv2d) for m in net.modules())
    assert sum(isinstance(m, PACTConv2d) for m in fq.modules()) == n_convs
    with torch.no_grad():
        torch.testing.assert_close(fq(x), net(x))
    fq.train()
    PACTController(fq, start_epoch=0)(0, fq)
    out = fq(x)
    assert out.shape == (2, 62)
    out.square().mean().backward()
