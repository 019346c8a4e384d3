"""Small fake-quantised MobileNet-like nets for the export tests (QAT'd and PTQ-calibrated states)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from qlspec.export.layerwise import fq_codes, layerwise_diffs  # noqa: F401  (re-exported for the tests)
from qlspec.quant import PACTController, QuantConfig, calibrate, float_to_fake, pact_param_groups

SIZE = 16


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False)
        self.bn_dw = nn.BatchNorm2d(cin)
        self.relu_dw = nn.ReLU()
        self.conv_sep = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn_sep = nn.BatchNorm2d(cout)
        self.relu_sep = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu_dw(self.bn_dw(self.conv_dw(x)))
        return self.relu_sep(self.bn_sep(self.conv_sep(x)))


class Mini(nn.Module):
    """conv1/bn1/relu -> 2 depthwise-separable blocks -> pool -> flatten/view -> fc (float outputs).

    `pool`: 'global' (AdaptiveAvgPool2d(1), as 3DDFA) or 'window' (AvgPool2d(2) then flatten of 2x2)."""

    def __init__(self, n_out: int = 5, w: int = 4, pool: str = "global") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, w, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU()
        self.b2 = Block(w, 2 * w)
        self.b3 = Block(2 * w, 4 * w, stride=2)
        self.pool_kind = pool
        self.avgpool = nn.AdaptiveAvgPool2d(1) if pool == "global" else nn.AvgPool2d(2)
        feat = 4 * w if pool == "global" else 4 * w * 4
        self.fc = nn.Linear(feat, n_out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.b3(self.b2(self.relu(self.bn1(self.conv1(x)))))
        x = self.avgpool(x)
        if self.pool_kind == "global":
            return self.fc(x.view(x.size(0), -1))
        return self.fc(torch.flatten(x, 1))


# (mode, weight/act bits, weight granularity, pooling) cases shared by the F2T and ONNX export tests
CASES = [(mode, bits, gran, pool) for mode in ("ptq", "qat") for bits in (8, 4)
         for gran in ("per-channel", "per-layer") for pool in (("global", "window") if bits == 8 and gran == "per-channel" else ("global",))]


def images(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """(x, pixels): smooth random uint8 BGR-like images, fed as (p - 127.5)/128 like 3DDFA."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, SIZE // 4, SIZE // 4, generator=g)
    img = torch.nn.functional.interpolate(base, size=(SIZE, SIZE), mode="bilinear", align_corners=False) * 255
    img = img + 20 * torch.randn(img.shape, generator=g)
    pixels = img.round().clamp(0, 255).to(torch.uint8)
    return (pixels.float() - 127.5) / 128, pixels


def _float_net(seed: int, pool: str) -> Mini:
    torch.manual_seed(seed)
    net = Mini(pool=pool)
    for m in net.modules():  # non-trivial BN statistics and affine parameters
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    x, _ = images(64, seed + 1)
    net.train()
    with torch.no_grad():
        for i in range(0, 64, 16):
            net(x[i:i + 16])
    return net.eval()


def fake_quantised(mode: str = "ptq", bits: int = 8, granularity: str = "per-channel", pool: str = "global",
                   seed: int = 0) -> nn.Module:
    """A started fake-quantised `Mini`: 'ptq' (fold_bn, percentile calibration) or 'qat' (BN kept,
    a few PACT SGD steps with learned clipping bounds)."""
    net = _float_net(seed, pool)
    x, _ = images(64, seed + 2)
    if mode == "ptq":
        cfg = QuantConfig(weight_bits=bits, act_bits=bits, weight_granularity=granularity, fold_bn=True)
        fq = float_to_fake(net, cfg, x[:8])
        calibrate(fq, [x[i:i + 16] for i in range(0, 64, 16)], method="percentile", percentile=99.9)
        return fq.eval()
    cfg = QuantConfig(weight_bits=bits, act_bits=bits, weight_granularity=granularity, act_init="max", act_clip=4.0)
    fq = float_to_fake(net, cfg, x[:8])
    ctrl = PACTController(fq, start_epoch=0, calibration_batches=[x[:32]])
    ctrl.step(0)
    target = torch.randn(64, 5, generator=torch.Generator().manual_seed(seed + 3))
    opt = torch.optim.SGD(pact_param_groups(fq, lr=1e-2), momentum=0.9)
    fq.train()
    for i in range(0, 64, 16):
        opt.zero_grad()
        loss = ((fq(x[i:i + 16]) - target[i:i + 16]) ** 2).mean()
        loss.backward()
        opt.step()
    ctrl.freeze_clip_at = 1
    ctrl.step(1)
    return fq.eval()
