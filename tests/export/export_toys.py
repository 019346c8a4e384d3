"""Small fake-quantised MobileNet-like nets for the export tests (QAT'd and PTQ-calibrated states)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from qlspec.export.integer_net import _SumPool
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


U32 = 2.0**-24  # float32's unit roundoff


@torch.no_grad()
def output_gap_and_bound(fq: nn.Module, inet, x: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gap, bound, flipped) for a net that ends in a Gemm fed by requantised codes.

    gap = TQ output - FQ output/eps, in output LSBs. TQ computes ``W @ a_tq + b_int`` exactly; FQ
    computes ``(W*eps_w) @ (a_fq*eps_a) + b`` in float32, so, with ``b_int = round(b/eps)``:

        |gap| <= |W| @ |a_tq - a_fq|  +  0.5  +  (I+4) * 2^-24 * (|W| @ |a_fq| + |b_int| + 1)  +  2^-23 * |y/eps|

    (the first term: requantiser flips upstream of the Gemm, each moving the output by the weight it
    meets; the rest: rounding the bias and float32's worst-case error of an I-term dot product,
    Higham's gamma_n, with the rounding of the fake-quantised weights and inputs counted as terms).
    The bound holds on any CPU and any summation order; `flipped` marks the rows (images) where some
    Gemm input code differs, the only rows where the gap may exceed half an LSB plus float error.
    """
    codes, y = fq_codes(fq, inet, x)
    tq = inet.module()(inet.quantise_input(x), keep=True)
    gemm = inet.layers[-1]
    assert gemm.op == "Gemm", gemm.op
    producer = {l.output.name: l for l in inet.layers}
    src = gemm.input
    while src not in codes:  # walk back through Flatten to the requantiser whose codes FQ also has
        src = producer[src].input
    a_tq = tq[src].flatten(1).double().numpy()
    a_fq = codes[src].flatten(1).double().numpy()
    w = np.abs(gemm.consts["weight"].astype(np.float64))
    b = np.abs(gemm.consts.get("bias", np.zeros(w.shape[0], np.int64)).astype(np.float64))
    y_lsb = y.double().numpy() / inet.output_eps
    gap = tq[gemm.output.name].double().numpy() - y_lsb
    n_in = w.shape[1]
    bound = np.abs(a_tq - a_fq) @ w.T + 0.5 + (n_in + 4) * U32 * (np.abs(a_fq) @ w.T + b + 1) + 2 * U32 * np.abs(y_lsb)
    return gap, bound, (a_tq != a_fq).any(axis=1)


@torch.no_grad()
def float32_magnitude(inet, q: Tensor) -> float:
    """The largest magnitude a float32 evaluation of `inet` meets on the integer inputs `q`.

    For each Conv/Gemm, ``|W| (*) |x| + |bias|`` bounds every partial sum; for each requantiser,
    ``|x|*|mul| + |add|`` bounds the product and the sum before the division by 2^D. Integers below
    2^24 are exact in float32 and a division by a power of two is exact, so below 2^24 a float32
    runtime (onnxruntime on the DORY spelling) computes the network exactly, on any CPU.
    """
    env = {inet.input.name: q.double()}
    env.update({k: v.double() for k, v in inet.module()(q, keep=True).items()})
    worst = 0.0
    for layer in inet.layers:
        x = env[layer.input]
        if layer.op in ("Conv", "Gemm"):
            m = abs_terms(layer, x)
        elif layer.op == "RequantShift":
            mul, add = (torch.from_numpy(np.array(np.abs(layer.consts[k]), np.float64)) for k in ("mul", "add"))
            m = x.abs() * per_channel(mul, x) + per_channel(add, x)
        elif layer.op == "SumPool":  # spelt as a float mean times k: exact only for power-of-two windows
            k = int(layer.attrs["k"])
            assert k & (k - 1) == 0, f"{layer.output.name}: a {k}-value mean is not exact in float32"
            continue
        else:
            continue
        worst = max(worst, float(m.max()))
    return worst


def per_channel(c: Tensor, like: Tensor) -> Tensor:
    """A per-tensor ``()`` or per-channel ``(C,)`` constant shaped to broadcast on axis 1 of `like`."""
    return c.reshape((-1,) + (1,) * (like.dim() - 2)) if c.dim() else c


def abs_terms(layer, x: Tensor) -> Tensor:
    """``|W| (*) |x| + |bias|`` for a Conv or Gemm, the window sums of ``|x|`` for a SumPool: what
    every partial sum of the layer's accumulation is bounded by (float64, exact on integers)."""
    x = x.abs()
    if layer.op == "SumPool":
        return _SumPool(layer)(x)
    w = torch.from_numpy(np.abs(layer.consts["weight"]).astype(np.float64))
    b = layer.consts.get("bias")
    b = None if b is None else torch.from_numpy(np.abs(b).astype(np.float64))
    if layer.op == "Gemm":
        return torch.nn.functional.linear(x, w, b)
    kw = {k: tuple(layer.attrs[k]) if k != "groups" else layer.attrs[k] for k in ("stride", "padding", "dilation", "groups")}
    return torch.nn.functional.conv2d(x, w, b, **kw)


def fan_in(layer) -> int:
    """How many terms each output of a Conv, Gemm or SumPool adds up."""
    if layer.op == "SumPool":
        return int(layer.attrs["k"])
    w = layer.consts["weight"]
    return int(np.prod(w.shape[1:]))


@torch.no_grad()
def unexplained_flips(fq: nn.Module, inet, x: Tensor) -> dict[str, tuple[int, int]]:
    """{quantiser: (flips, flips float32 cannot explain)}, each TQ requantiser fed FQ's own codes.

    TQ computes ``v = (a*mul + add) / 2^D`` exactly and floors it. FQ computes the same real function
    in float32 (the accumulation of K terms bounded by M = |W| (*) |codes|, BatchNorm, the division by
    eps and the flooring tolerance: Higham's gamma with K + 8 operations), and TQ's constants are
    FQ's rounded to integers. So FQ's value is within

        delta = (K+8) * 2^-24 * (M*|mul| + |add|) / 2^D  +  (|a| * (0.5 + 2^-24*|mul|) + 0.5 + 2^-24*|add|) / 2^D

    of v, and the two can floor to different levels only where v lies within delta of an integer.
    A flip anywhere else is an arithmetic error, not float rounding; this holds on any CPU."""
    codes, _ = fq_codes(fq, inet, x)
    env = {inet.input.name: inet.quantise_input(x).double(), **{k: v.double() for k, v in codes.items()}}
    producer = {l.output.name: l for l in inet.layers}
    out = {}
    for layer, m in zip(inet.layers, inet.module().layers):
        a = env[layer.input]
        y = m(a)
        if layer.op != "RequantShift":
            env.setdefault(layer.output.name, y)
            continue
        flipped = y.long() != codes[layer.output.name]
        acc = producer[layer.input]
        big_m = abs_terms(acc, env[acc.input])
        mul, add = (torch.from_numpy(np.array(layer.consts[k], np.int64)) for k in ("mul", "add"))
        div = int(layer.attrs["div"])
        exact = a.long() * per_channel(mul, a) + per_channel(add, a)
        r = torch.remainder(exact, div).double()
        dist = torch.minimum(r, div - r) / div
        u = 2.0**-24
        mul_f, add_f = per_channel(mul.double().abs(), a), per_channel(add.double().abs(), a)
        delta = ((fan_in(acc) + 8) * u * (big_m * mul_f + add_f) + a.abs() * (0.5 + u * mul_f) + 0.5 + u * add_f) / div
        out[layer.source] = (int(flipped.sum()), int((flipped & (dist > delta)).sum()))
    return out
