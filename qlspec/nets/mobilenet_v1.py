"""The 3DDFA MobileNet-V1 regressor, layer for layer as in 3DDFA_V2 ``models/mobilenet_v1.py``.

Input: ``(N, 3, 120, 120)`` float32, **BGR** channel order, normalised as ``(x - 127.5) / 128``
(`qlspec.preprocess.InputTransform`). Output: ``(N, num_params)`` float32, the z-scored 3DMM parameters
(12 pose + 40 shape + 10 expression for 62; de-normalise with `qlspec.face.params.ParamStats`).

Module names and parameter shapes equal 3DDFA_V2's, so its checkpoints (``mb1_120x120.pth``,
``mb05_120x120.pth``) load after the renames its own ``load_model`` does (strip ``module.``,
``fc_param`` -> ``fc``, drop ``fc_lm``). Parameter counts with 62 outputs: 3,270,526 (width 1.0),
850,398 (width 0.5).

One deliberate difference that changes no state-dict key: 3DDFA_V2 applies one shared ``relu``
module twice inside each `DepthWiseBlock`; here the block owns two, ``relu_dw`` and ``relu_sep``,
so that a quantiser can give each activation its own clipping range. ReLU is not in-place, so
forward hooks see the pre-activation tensors unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["DepthWiseBlock", "MobileNetV1"]


class DepthWiseBlock(nn.Module):
    """3x3 depthwise conv (stride `stride`, padding 1, no bias) -> BN -> ReLU -> 1x1 conv (no bias) -> BN -> ReLU."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(inplanes, inplanes, kernel_size=3, padding=1, stride=stride, groups=inplanes, bias=False)
        self.bn_dw = nn.BatchNorm2d(inplanes)
        self.relu_dw = nn.ReLU()
        self.conv_sep = nn.Conv2d(inplanes, planes, kernel_size=1, stride=1, padding=0, bias=False)
        self.bn_sep = nn.BatchNorm2d(planes)
        self.relu_sep = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu_dw(self.bn_dw(self.conv_dw(x)))
        return self.relu_sep(self.bn_sep(self.conv_sep(x)))


# (name, input channels, output channels, stride) at width 1.0; channels scale as int(c * width).
_BLOCKS: tuple[tuple[str, int, int, int], ...] = (
    ("dw2_1", 32, 64, 1),
    ("dw2_2", 64, 128, 2),
    ("dw3_1", 128, 128, 1),
    ("dw3_2", 128, 256, 2),
    ("dw4_1", 256, 256, 1),
    ("dw4_2", 256, 512, 2),
    ("dw5_1", 512, 512, 1),
    ("dw5_2", 512, 512, 1),
    ("dw5_3", 512, 512, 1),
    ("dw5_4", 512, 512, 1),
    ("dw5_5", 512, 512, 1),
    ("dw5_6", 512, 1024, 2),
    ("dw6", 1024, 1024, 1),
)


class MobileNetV1(nn.Module):
    """3DDFA's MobileNet-V1: stem conv1 (3x3, stride 2) -> 13 depthwise-separable blocks -> global
    average pool -> ``fc`` (``int(1024 * width)`` -> `num_params`, with bias).

    Weight init as 3DDFA_V2: conv weights ~ N(0, sqrt(2 / (k*k*out_channels))), BN weight 1 and
    bias 0, Linear left at the PyTorch default. Draws from the global torch RNG: seed it first.
    """

    def __init__(self, width: float = 1.0, num_params: int = 62) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be > 0 (got {width})")
        self.width = float(width)
        self.num_params = int(num_params)

        def ch(c: int) -> int:
            return int(c * width)

        self.conv1 = nn.Conv2d(3, ch(32), kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch(32))
        self.relu = nn.ReLU()
        for name, cin, cout, stride in _BLOCKS:
            setattr(self, name, DepthWiseBlock(ch(cin), ch(cout), stride))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch(1024), num_params)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for name, *_ in _BLOCKS:
            x = getattr(self, name)(x)
        x = self.avgpool(x)
        return self.fc(torch.flatten(x, 1))
