"""What quantisation-aware training costs per step: float against qlspec PACT (8 and 4 bits) and torch.ao.

One training step (forward, MSE loss on the 62 outputs, backward, SGD with Nesterov momentum) of the
default app's network (3DDFA MobileNet-V1 x0.5, 120x120) on the same batch and threads, in the memory
layout the trainer's batches have (channels_last strides; ``--nchw``: contiguous), for:

- float: the network as the train stage trains it;
- qlspec PACT w8a8 and w4a4: `float_to_fake` of the same network with the default preset's settings
  (per-channel weights, max-initialised and recomputed from the weights; activations clipped at 6
  and learned), quantisers started, optimiser groups from `pact_param_groups`; activations through
  the fused C kernel (`qlspec.quant.pact_native`) where it is built, and w8a8 once more with it
  switched off ("torch path": what a machine without a C compiler gets);
- torch.ao FX QAT: `prepare_qat_fx` with the fbgemm default QConfig (per-tensor fake quantisers with
  observers, BatchNorm kept), the usual peer;
- Brevitas: only when it is installed (it is not a dependency of qlspec).

Each variant runs `--steps` steps per round after a warm-up, the variants in turn, for `--rounds`
rounds; printed are the median step time over rounds and each variant's ratio to float, with the
range of the per-round ratios (load on the machine moves all variants of a round alike).

    python bench/qat_overhead.py [--batch 64] [--threads 2] [--steps 5] [--rounds 3] [--nchw]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from qlspec.nets import registry
from qlspec.quant import QuantConfig, float_to_fake, pact_native, pact_param_groups, start_activations, start_weights

LR = 1e-3


def trainer(net: torch.nn.Module, params, x: torch.Tensor, y: torch.Tensor, *, torch_path: bool = False) -> Callable[[], None]:
    """One SGD step of `net` on (x, y), as a call (PACT's torch path throughout when `torch_path`)."""
    opt = torch.optim.SGD(params, lr=LR, momentum=0.9, nesterov=True)
    net.train()

    def step() -> None:
        with pact_native.disabled() if torch_path else contextlib.nullcontext():
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(net(x), y)
            loss.backward()
            opt.step()

    return step


def pact(net: torch.nn.Module, bits: int, x: torch.Tensor) -> torch.nn.Module:
    cfg = QuantConfig(weight_bits=bits, act_bits=bits, weight_init="max", act_init="const", act_clip=6.0)
    fq = float_to_fake(net, cfg, x[:8])
    start_weights(fq)
    start_activations(fq)
    return fq


def torch_ao(net: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice (it points to torchao)
        return prepare_qat_fx(copy.deepcopy(net).train(), get_default_qat_qconfig_mapping("fbgemm"), (x[:8],))


def brevitas_version() -> str | None:
    try:
        import brevitas
    except ImportError:
        return None
    return str(getattr(brevitas, "__version__", "?"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the default app trains on 2)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--nchw", action="store_true", help="contiguous NCHW batches (the trainer's are channels_last)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    net = registry.build("3ddfa-mobilenet-v1", 0.5)
    x = torch.nn.functional.avg_pool2d(torch.rand(args.batch, 3, 120, 120) * 2 - 1, 5, 1, 2)
    if not args.nchw:  # the trainer's layout: the input transform's NHWC batch seen as NCHW (channels_last strides)
        x = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    y = torch.randn(args.batch, 62)
    variants: dict[str, Callable[[], None]] = {}
    float_net = copy.deepcopy(net)
    variants["float"] = trainer(float_net, float_net.parameters(), x, y)
    for bits in (8, 4):
        fq = pact(net, bits, x)
        variants[f"qlspec PACT w{bits}a{bits}"] = trainer(fq, pact_param_groups(fq, LR), x, y)
    fq = pact(net, 8, x)
    variants["qlspec PACT w8a8, torch path"] = trainer(fq, pact_param_groups(fq, LR), x, y, torch_path=True)
    ao = torch_ao(net, x)
    variants["torch.ao FX QAT (fbgemm)"] = trainer(ao, ao.parameters(), x, y)

    for step in variants.values():  # warm-up: allocator, observers' first ranges
        step()
        step()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, step in variants.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - t0) / args.steps)

    print(
        f"3DDFA MobileNet-V1 x0.5, 120x120, batch {args.batch}, {args.threads} thread(s), "
        f"{args.steps} steps x {args.rounds} rounds, {'NCHW' if args.nchw else 'channels_last'} batches, torch {torch.__version__}"
    )
    print(f"PACT activations: {pact_native.describe()}")
    print(f"{'variant':30s} {'ms/step':>9s} {'img/s':>8s} {'x float':>8s} {'(range over rounds)':>21s}")
    for name, ts in times.items():
        ratios = [t / f for t, f in zip(ts, times["float"])]
        t = statistics.median(ts)
        print(f"{name:30s} {t * 1e3:9.1f} {args.batch / t:8.1f} {statistics.median(ratios):8.2f}   {min(ratios):.2f}..{max(ratios):.2f}")
    version = brevitas_version()
    if version is None:
        print("Brevitas: not installed (not a qlspec dependency), not measured")
    else:
        print(f"Brevitas {version}: installed, not measured (its layers replace the network's own; not wired in here)")


if __name__ == "__main__":
    main()
