"""Small fake-quantised MobileNet-like nets for the export tests (QAT'd and PTQ-calibrated states)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from qlspec.engine.ops import op_for
from qlspec.engine.run import run_graph
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


class ResidualBlock(nn.Module):
    """3DDFA_V2's ResNet BasicBlock: conv-BN-ReLU-conv-BN, plus the input (or a 1x1 conv-BN of it), ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


class MiniRes(nn.Module):
    """conv1/bn1/relu -> a residual block with a 1x1 shortcut and one with the identity -> a 1x1 conv
    with bias -> global pool (the output, as 3DDFA_V2's ResNet-22 ends) or pool -> fc."""

    def __init__(self, n_out: int = 5, w: int = 4, pool: str = "global") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, w, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(ResidualBlock(w, 2 * w, stride=2), ResidualBlock(2 * w, 2 * w))
        self.pool_kind = pool
        self.head = nn.Conv2d(2 * w, n_out, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1) if pool == "global" else nn.AvgPool2d(2)
        self.fc = nn.Linear(n_out * 4, n_out) if pool == "window" else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer1(self.relu(self.bn1(self.conv1(x))))
        x = self.avgpool(self.head(x))
        x = x.view(x.size(0), -1)
        return x if self.fc is None else self.fc(x)


class MiniCat(nn.Module):
    """conv1/bn1/relu -> two branches (1x1 and 3x3 conv-BN-ReLU) concatenated on channels -> conv ->
    pool -> fc: an inception-style merge."""

    def __init__(self, n_out: int = 5, w: int = 4, pool: str = "global") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, w, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU()
        self.a = nn.Sequential(nn.Conv2d(w, w, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU())
        self.conv2 = nn.Conv2d(3 * w, 4 * w, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * w)
        self.pool_kind = pool
        self.avgpool = nn.AdaptiveAvgPool2d(1) if pool == "global" else nn.AvgPool2d(2)
        self.fc = nn.Linear(4 * w if pool == "global" else 16 * w, n_out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = torch.cat([self.a(x), self.b(x)], dim=1)
        x = self.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


TOPOLOGIES = {"chain": Mini, "residual": MiniRes, "concat": MiniCat}

# (mode, weight/act bits, weight granularity, pooling) cases shared by the F2T and ONNX export tests
CASES = [
    (mode, bits, gran, pool)
    for mode in ("ptq", "qat")
    for bits in (8, 4)
    for gran in ("per-channel", "per-layer")
    for pool in (("global", "window") if bits == 8 and gran == "per-channel" else ("global",))
]
# the same on `MiniRes` (residual adds) and `MiniCat` (a concatenation): (mode, bits, granularity, pooling)
RESIDUAL_CASES = [
    (mode, bits, gran, pool)
    for mode in ("ptq", "qat")
    for bits in (8, 4)
    for gran in ("per-channel", "per-layer")
    for pool in ("global", "window")
]
# every case with its topology: (mode, bits, granularity, pooling, topology)
ALL_TOPOLOGY_CASES = [(*c, "chain") for c in CASES] + [(*c, t) for c in RESIDUAL_CASES for t in ("residual", "concat")]


def images(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """(x, pixels): smooth random uint8 BGR-like images, fed as (p - 127.5)/128 like 3DDFA."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, SIZE // 4, SIZE // 4, generator=g)
    img = torch.nn.functional.interpolate(base, size=(SIZE, SIZE), mode="bilinear", align_corners=False) * 255
    img = img + 20 * torch.randn(img.shape, generator=g)
    pixels = img.round().clamp(0, 255).to(torch.uint8)
    return (pixels.float() - 127.5) / 128, pixels


def _float_net(seed: int, pool: str, topology: str = "chain") -> nn.Module:
    torch.manual_seed(seed)
    net = TOPOLOGIES[topology](pool=pool)
    for m in net.modules():  # non-trivial BN statistics and affine parameters
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    x, _ = images(64, seed + 1)
    net.train()
    with torch.no_grad():
        for i in range(0, 64, 16):
            net(x[i : i + 16])
    return net.eval()


def fake_quantised(
    mode: str = "ptq",
    bits: int = 8,
    granularity: Literal["per-channel", "per-layer"] = "per-channel",
    pool: str = "global",
    seed: int = 0,
    topology: str = "chain",
) -> nn.Module:
    """A started fake-quantised `Mini` (or `MiniRes`, `MiniCat`: `TOPOLOGIES`): 'ptq' (fold_bn,
    percentile calibration) or 'qat' (BN kept, a few PACT SGD steps with learned clipping bounds)."""
    net = _float_net(seed, pool, topology)
    x, _ = images(64, seed + 2)
    if mode == "ptq":
        cfg = QuantConfig(weight_bits=bits, act_bits=bits, weight_granularity=granularity, fold_bn=True)
        fq = float_to_fake(net, cfg, x[:8])
        calibrate(fq, [x[i : i + 16] for i in range(0, 64, 16)], method="percentile", percentile=99.9)
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
        loss = ((fq(x[i : i + 16]) - target[i : i + 16]) ** 2).mean()
        loss.backward()
        opt.step()
    ctrl.freeze_clip_at = 1
    ctrl.step(1)
    return fq.eval()


U32 = 2.0**-24  # float32's unit roundoff


def abs_terms(g, node, x: np.ndarray, env: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """``|W| (*) |x| + |bias|`` for a Conv or Gemm, the window sums of ``|x|`` for a pool, ``|a| + |b|``
    for an Add, ``|x|`` itself otherwise: what every partial sum of the node's result is bounded by
    (exact integers, int64). `env` gives an Add's second input."""
    op = op_for(node)
    if node.op in ("SumPool", "GlobalSumPool"):
        return np.asarray(op.run(np.abs(x)), np.int64)
    if node.op == "Add":
        assert env is not None, "an Add needs env for its second input"
        return np.abs(x) + np.abs(env[node.inputs[1]].astype(np.int64))
    if node.op == "Concat":
        assert env is not None, "a Concat needs env for its inputs"
        return np.abs(np.asarray(op.run(*(env[t] for t in node.inputs)), np.int64))
    if node.op not in ("Conv", "Gemm"):
        return np.abs(np.asarray(op.run(x, *(g.constants[t] for t in node.inputs[1:] if t)), np.int64))
    consts = [np.abs(g.constants[t].astype(np.int64)) for t in node.inputs[1:] if t]
    return np.asarray(op.run(np.abs(x), *consts), np.int64)


def fan_in(g, node) -> int:
    """How many terms each output of a Conv, Gemm, pool or Add adds up (1 for anything else)."""
    if node.op == "SumPool":
        return int(np.prod(node.attr("kernel_shape")))
    if node.op == "GlobalSumPool":
        return int(np.prod(g.info(node.inputs[0]).shape[2:]))
    if node.op == "Add":
        return 2
    if node.op in ("Conv", "Gemm"):
        return int(np.prod(g.constants[node.inputs[1]].shape[1:]))
    return 1


def _fq_env(fq: nn.Module, net, x: Tensor) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], Tensor]:
    """(FQ codes by tensor, {tensor: value} with FQ codes wherever FQ has them and the graph's ops
    elsewhere, FQ's output)."""
    codes, y = fq_codes(fq, net, x)
    g = net.graph
    env = {**g.constants, "input": net.quantise_input(x), **codes}
    for n in g.nodes:
        if n.op != "Quantise" and n.outputs[0] not in env:
            env[n.outputs[0]] = np.asarray(op_for(n).run(*(env[t] if t else None for t in n.inputs)))
    return codes, env, y


@torch.no_grad()
def output_gap_and_bound(fq: nn.Module, net, x: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    codes, y = fq_codes(fq, net, x)
    g = net.graph
    tq = run_graph(g, {"image": x.numpy()}, keep_intermediates=True)
    gemm = g.producer("output")
    assert gemm.op == "Gemm", gemm.op
    src = gemm.inputs[0]
    while src not in codes:  # walk back through Flatten to the requantiser whose codes FQ also has
        src = g.producer(src).inputs[0]
    a_tq = tq[src].reshape(len(x), -1).astype(np.float64)
    a_fq = codes[src].reshape(len(x), -1).astype(np.float64)
    w = np.abs(g.constants[gemm.inputs[1]].astype(np.float64))
    b = np.abs(g.constants[gemm.inputs[2]].astype(np.float64))
    y_lsb = y.double().numpy() / net.output_eps
    gap = tq["output"].astype(np.float64) - y_lsb
    n_in = w.shape[1]
    bound = np.abs(a_tq - a_fq) @ w.T + 0.5 + (n_in + 4) * U32 * (np.abs(a_fq) @ w.T + b + 1) + 2 * U32 * np.abs(y_lsb)
    return gap, bound, (a_tq != a_fq).any(axis=1)


def float32_magnitude(net, q: np.ndarray) -> float:
    """The largest magnitude a float32 evaluation of the integer graph meets on the integer inputs `q`.

    For each Conv/Gemm/pool/Add, ``|W| (*) |x| + |bias|`` (window sums, ``|a| + |b|``) bounds every
    partial sum; for each requantiser,
    ``|x|*|mul| + |add| + div`` bounds the product and the sums before the division by 2^D. Integers
    below 2^24 are exact in float32 and a division by a power of two is exact, so below 2^24 a
    float32 runtime (onnxruntime on the DORY spelling) computes the graph exactly, on any CPU.
    Pools are written as means, exact only for power-of-two windows (checked)."""
    g = net.integer_graph()
    env = {**g.constants, **run_graph(g, {"input": q}, keep_intermediates=True)}
    worst = 0
    for n in g.nodes:
        x = env[n.inputs[0]].astype(np.int64)
        if n.op in ("Conv", "Gemm"):
            m = abs_terms(g, n, x)
        elif n.op == "RequantShift":
            mul, add = (np.abs(g.constants[t].astype(np.int64)) for t in n.inputs[1:])
            m = np.abs(x) * mul + add + n.attr("div")
        elif n.op in ("Add", "Concat"):
            m = abs_terms(g, n, x, env)
        elif n.op in ("SumPool", "GlobalSumPool"):
            k = fan_in(g, n)
            assert k & (k - 1) == 0, f"{n.name}: a {k}-value mean is not exact in float32"
            m = abs_terms(g, n, x)
        else:
            continue
        worst = max(worst, int(m.max()))
    return float(worst)


@torch.no_grad()
def unexplained_flips(fq: nn.Module, net, x: Tensor) -> dict[str, tuple[int, int]]:
    """{quantiser: (flips, flips float32 cannot explain)}, each requantiser fed FQ's own codes.

    TQ computes ``v = (a*mul + add + 2^(D-1)) / 2^D`` exactly and floors it. FQ computes the same
    real function in float32 (the accumulation of K terms bounded by M = |W| (*) |codes|, BatchNorm,
    the division by eps and the flooring tolerance: Higham's gamma with K + 8 operations), and the
    graph's constants are FQ's rounded to integers. So FQ's value is within

        delta = (K+8) * 2^-24 * (M*|mul| + |add|) / 2^D  +  (|a| * (0.5 + 2^-24*|mul|) + 0.5 + 2^-24*|add|) / 2^D

    of v, and the two can floor to different levels only where v lies within delta of an integer.
    A flip anywhere else is an arithmetic error, not float rounding; this holds on any CPU."""
    codes, env, _ = _fq_env(fq, net, x)
    g = net.graph
    out = {}
    for n in g.nodes:
        if n.op != "RequantShift":
            continue
        a = env[n.inputs[0]].astype(np.int64)
        y = np.asarray(op_for(n).run(a, *(g.constants[t] for t in n.inputs[1:])))
        flipped = y != codes[n.outputs[0]]
        acc = g.producer(n.inputs[0])
        big_m = (abs_terms(g, acc, env[acc.inputs[0]].astype(np.int64), env) if acc is not None else np.abs(a)).astype(np.float64)
        mul, add = (g.constants[t].astype(np.int64) for t in n.inputs[1:])
        div = int(n.attr("div"))
        r = np.mod(a * mul + add + div // 2, div).astype(np.float64)
        dist = np.minimum(r, div - r) / div
        mul_f, add_f = np.abs(mul).astype(np.float64), np.abs(add + div // 2).astype(np.float64)
        k = fan_in(g, acc) if acc is not None else 1
        delta = ((k + 8) * U32 * (big_m * mul_f + add_f) + np.abs(a) * (0.5 + U32 * mul_f) + 0.5 + U32 * add_f) / div
        out[net.sources[n.name]] = (int(flipped.sum()), int((flipped & (dist > delta)).sum()))
    return out
