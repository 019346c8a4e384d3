"""3DDFA_V2's ResNet-22 regressor (``models/resnet.py``, ``configs/resnet_120x120.yml``), with a width factor.

Input: ``(N, 3, 120, 120)`` float32, BGR, normalised as the spec says (3DDFA: ``(x - 127.5) / 128``).
Output: ``(N, num_params)`` z-scored 3DMM parameters, as `MobileNetV1`.

Layer for layer as 3DDFA_V2's ``resnet22``: ``conv1`` 5x5 stride 2 (3 -> 32) -> BN -> ReLU ->
``conv2`` 3x3 (32 -> 64) -> BN -> ReLU -> ``layer1`` 3 BasicBlocks (128, first stride 2) ->
``layer2`` 4 blocks (256, stride 2) -> ``layer3`` 3 blocks (512, stride 2) -> ``conv_param``
(1x1, 512 -> 62, with bias) -> global average pool -> flatten. A BasicBlock is conv3x3-BN-ReLU-
conv3x3-BN, plus the input (or ``downsample``: a 1x1 conv of the stride, then BN, where the shape
changes), then ReLU. Channel counts scale as ``int(c * width)``; at width 1.0 the module names and
shapes equal 3DDFA_V2's, so its ``resnet22.pth`` loads through `qlspec.nets.checkpoint` (``module.``
stripped, the unused ``conv_lm`` head, if present, dropped). Parameters with 62 outputs, and
multiply-accumulates at 120x120: 18,449,246 and 2.66 G at width 1.0 (3DDFA_V2's figures); 293,570 and
43 M at 0.125 (about MobileNet-V1 x0.5's compute); 74,936 and 11 M at 0.0625.

The residual ``out + residual`` is an ordinary add here; `qlspec.quant.float_to_fake` harmonises it
(one quantiser on both inputs, QuantLib's PACTIntegerAdd), and F2T makes it an integer Add.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BasicBlock", "ResNet22"]

LAYERS = ((128, 3, 2), (256, 4, 2), (512, 3, 2))  # (planes at width 1, blocks, first stride)


class BasicBlock(nn.Module):
    """conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, + input or downsample(input), -> ReLU."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


class ResNet22(nn.Module):
    """3DDFA_V2's ResNet-22 (module docstring). Init as 3DDFA_V2: Kaiming-normal convs (fan_out,
    ReLU), BN weight 1 and bias 0. Draws from the global torch RNG: seed it first."""

    layer1: nn.Sequential  # set by name in __init__, one per entry of LAYERS
    layer2: nn.Sequential
    layer3: nn.Sequential

    def __init__(self, width: float = 1.0, num_params: int = 62) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be > 0 (got {width})")
        self.width = float(width)
        self.num_params = int(num_params)

        def ch(c: int) -> int:
            return max(int(c * width), 1)

        self.conv1 = nn.Conv2d(3, ch(32), kernel_size=5, stride=2, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(ch(32))
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(ch(32), ch(64), kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch(64))
        self.relu2 = nn.ReLU()
        inplanes = ch(64)
        for i, (planes, blocks, stride) in enumerate(LAYERS, start=1):
            layer = []
            for b in range(blocks):
                layer.append(BasicBlock(inplanes, ch(planes), stride if b == 0 else 1))
                inplanes = ch(planes)
            setattr(self, f"layer{i}", nn.Sequential(*layer))
        self.conv_param = nn.Conv2d(inplanes, num_params, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # images arrive as a permuted NHWC batch; torch 2.13's CPU backward of this net crashes
        # (double free) on that layout, so take a contiguous copy first
        x = self.relu1(self.bn1(self.conv1(x.contiguous())))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.avgpool(self.conv_param(x))
        return x.view(x.size(0), -1)
