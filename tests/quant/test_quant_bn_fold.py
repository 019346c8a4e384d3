"""BN folding keeps the network's function (eval mode) to float32 rounding."""

from __future__ import annotations

import torch
from quant_toys import TinyMobileNet
from torch import nn

from qlspec.quant import fold_batchnorm


def _randomise_bn(net: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(0.1 + 3 * torch.rand(n, generator=g))
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g))


def test_folding_the_mobilenet_keeps_outputs():
    torch.manual_seed(0)
    net = TinyMobileNet()
    _randomise_bn(net)
    net.eval()
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # original untouched
    assert folded.get_submodule("dw2.conv_sep").bias is not None
    x = torch.randn(16, 3, 24, 24)
    with torch.no_grad():
        ref, out = net(x), folded(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


class _Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3, bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.bn_alone = nn.BatchNorm2d(4)  # follows a ReLU: not foldable
        self.fc = nn.Linear(4, 5)
        self.bn1d = nn.BatchNorm1d(5)

    def forward(self, x):
        x = self.bn_alone(torch.relu(self.bn(self.c(x))))
        return self.bn1d(self.fc(x.mean((2, 3))))


def test_biased_conv_linear_and_unfoldable_bn():
    net = _Mixed()
    _randomise_bn(net)
    net.eval()
    folded = fold_batchnorm(net)
    kinds = {n: type(m).__name__ for n, m in folded.named_children()}
    assert "bn" not in kinds and "bn1d" not in kinds and kinds["bn_alone"] == "BatchNorm2d"
    x = torch.randn(8, 3, 10, 10)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)
