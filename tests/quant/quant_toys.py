"""A small MobileNet-like regressor and a synthetic 'find the blob' regression task for the quant tests.

The net has 3DDFA_V2's structure in miniature: conv1/bn1/relu, depthwise-separable blocks with
conv_dw/bn_dw/conv_sep/bn_sep and ONE ReLU module called twice, average pooling, view, fc.
The task regresses a Gaussian blob's centre, radius and brightness from a 3x24x24 uint8 image fed
as (pixel - 127.5)/128, like 3DDFA's input.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class DepthWiseBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False)
        self.bn_dw = nn.BatchNorm2d(cin)
        self.conv_sep = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn_sep = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn_dw(self.conv_dw(x)))
        return self.relu(self.bn_sep(self.conv_sep(x)))


class TinyMobileNet(nn.Module):
    def __init__(self, n_out: int = 4, width: int = 8) -> None:
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(3, w, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.dw2 = DepthWiseBlock(w, 2 * w)
        self.dw3 = DepthWiseBlock(2 * w, 4 * w, stride=2)
        self.dw4 = DepthWiseBlock(4 * w, 4 * w)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, n_out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.dw4(self.dw3(self.dw2(x)))
        x = self.avgpool(x)
        x = x.view(x.size(0), -1)
        return self.fc(x)


def blob_data(n: int, seed: int, size: int = 24) -> tuple[Tensor, Tensor, Tensor]:
    """(x, y, pixels): inputs (pixel-127.5)/128, 4 targets of unit scale, and the uint8 pixels."""
    g = torch.Generator().manual_seed(seed)
    u = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    cx, cy = 4 + (size - 8) * u(n), 4 + (size - 8) * u(n)
    r = 1.5 + 2.5 * u(n)
    level = 120 + 135 * u(n)
    colour = level[:, None] * (0.7 + 0.3 * u(n, 3))
    bg = 60 * u(n, 3)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    d2 = (xx[None] - cx[:, None, None]) ** 2 + (yy[None] - cy[:, None, None]) ** 2
    blob = torch.exp(-d2 / (2 * r[:, None, None] ** 2))
    img = bg[:, :, None, None] + (colour - bg)[:, :, None, None] * blob[:, None]
    img = img + 8 * torch.randn(img.shape, generator=g)
    pixels = img.round().clamp(0, 255).to(torch.uint8)
    x = (pixels.float() - 127.5) / 128
    half = size / 2
    y = torch.stack([(cx - half) / (half - 4), (cy - half) / (half - 4), (r - 2.75) / 1.25, (level - 187.5) / 67.5], 1)
    return x, y, pixels


def batches(x: Tensor, y: Tensor, bs: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(x.shape[0], generator=g)
    for i in range(0, x.shape[0] - bs + 1, bs):
        j = idx[i : i + bs]
        yield x[j], y[j]


def train(
    net: nn.Module, x: Tensor, y: Tensor, epochs: int, opt: torch.optim.Optimizer, bs: int = 64, on_epoch_start=None, seed: int = 0
) -> None:
    loss_fn = nn.MSELoss()
    for epoch in range(epochs):
        if on_epoch_start is not None:
            on_epoch_start(epoch, net)
        net.train()
        for xb, yb in batches(x, y, bs, seed + epoch):
            opt.zero_grad()
            loss_fn(net(xb), yb).backward()
            opt.step()


@torch.no_grad()
def rmse(net: nn.Module, x: Tensor, y: Tensor) -> float:
    net.eval()
    return math.sqrt(float(((net(x) - y) ** 2).mean()))
