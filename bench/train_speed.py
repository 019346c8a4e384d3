"""Training speed: images/s of float training and PACT QAT, in 1 and 2 processes, on the available device.

Each row is measured in the same run: one epoch of `qlspec.training.trainer.train` (the loop the train
and quantise stages run), median of ``--repeats`` epochs after a warm-up, in every process of a group
launched by `qlspec.training.distributed.launch` (gloo on the CPU, nccl on GPUs). The CPU threads are
split between the processes (``--threads`` in all), so the rows compare the same machine. QAT/float is
the time of a QAT epoch over that of a float epoch, both from the same row.

In one process the trainer is also measured against its peer, a plain PyTorch loop over the same
network, images, targets, loss (`FaceLoss`), optimiser and batch (transform, forward, loss,
zero_grad, backward, step; no learning-rate schedule, logging, validation or checkpoint), its
epochs alternating with the trainer's; "trainer/plain" is the trainer's images/s over the loop's.
A per-phase profile follows, one extra epoch of that loop timed phase by phase (data, forward, loss,
backward, optimiser), with the per-epoch work the trainer adds timed on its own: quantiser
bookkeeping (the controller's epoch step, and the weight bounds recomputed from the weights, which
runs inside every forward), evaluation (the validation split) and checkpointing.

With ``--compile`` every process count gets a second row, measured in the same processes: the same
epochs with ``training.compile: true`` (`torch.compile`, inductor), alternating with the eager ones
(a busy machine slows both alike), and the one-off compile time apart: the first compiled epoch's
time less the median compiled epoch's. The inductor cache starts empty (a temporary
``TORCHINDUCTOR_CACHE_DIR``), so that is a first run's cost; "float x" and "QAT x" are the speed-ups.

    python bench/train_speed.py                       # defaults: 256 images of 64x64, width 0.25
    python bench/train_speed.py --images 2048 --size 120 --width 0.5 --batch 64 --processes 1 2 4
    python bench/train_speed.py --compile --processes 1
    python bench/train_speed.py --images 3072 --size 120 --width 0.5 --batch 64 --processes 1   # the default app's network
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from qlspec import atomic
from qlspec.data.faceset import FaceSet
from qlspec.data.synthetic import render_synthetic
from qlspec.face.morphable import synthetic_face_model
from qlspec.face.params import ParamStats
from qlspec.nets.mobilenet_v1 import MobileNetV1
from qlspec.preprocess import DEFAULT
from qlspec.quant import PACTController, QuantConfig, float_to_fake, pact_native, pact_param_groups
from qlspec.quant.pact import PACTConv2d, PACTLinear, pact_modules
from qlspec.spec.models import Distributed, Training
from qlspec.training.distributed import launch, world
from qlspec.training.hardware import Hardware
from qlspec.training.loss import FaceLoss
from qlspec.training.trainer import evaluate, train

PHASES = ("data", "forward", "loss", "backward", "optimiser")
EXTRAS = ("quantiser bookkeeping", "evaluation", "checkpoint")


class PlainLoop:
    """The peer: one epoch of a plain PyTorch loop over `net` (the same data, loss and optimiser as the trainer)."""

    def __init__(self, net: torch.nn.Module, params, tr: FaceSet, stats: ParamStats, batch: int) -> None:
        self.net, self.tr, self.batch = net, tr, batch
        self.targets = torch.as_tensor(stats.normalise(tr.params.astype("float32")), dtype=torch.float32)
        self.loss_fn = FaceLoss(synthetic_face_model(), stats)
        self.opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def _steps(self):
        order = torch.randperm(len(self.tr))
        for s in range(0, len(order) - self.batch + 1, self.batch):
            yield order[s : s + self.batch]

    def epoch(self) -> float:
        self.net.train()
        t0 = time.perf_counter()
        for idx in self._steps():
            x, y = DEFAULT(self.tr.images[idx.numpy()]), self.targets[idx]
            loss, _ = self.loss_fn(self.net(x), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return time.perf_counter() - t0

    def phases(self) -> dict[str, float]:
        """One epoch, seconds per phase (`PHASES`)."""
        self.net.train()
        got = dict.fromkeys(PHASES, 0.0)
        for idx in self._steps():
            t = [time.perf_counter()]
            x, y = DEFAULT(self.tr.images[idx.numpy()]), self.targets[idx]
            t.append(time.perf_counter())
            out = self.net(x)
            t.append(time.perf_counter())
            loss, _ = self.loss_fn(out, y)
            t.append(time.perf_counter())
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            t.append(time.perf_counter())
            self.opt.step()
            t.append(time.perf_counter())
            for name, a, b in zip(PHASES, t, t[1:]):
                got[name] += b - a
        return got


def _extras(net: torch.nn.Module, controller, va: FaceSet, stats: ParamStats, steps: int, ckpt: Path) -> dict[str, float]:
    """Seconds of the per-epoch work the trainer adds to the loop (`EXTRAS`), each timed on its own."""
    t0 = time.perf_counter()
    if controller is not None:
        controller(0, net)  # the epoch hook (commands already applied: what every later epoch costs)
        with torch.no_grad():  # the weight bounds every forward recomputes from the weights, once per step
            for _ in range(steps):
                for _, m in pact_modules(net):
                    if isinstance(m, (PACTConv2d, PACTLinear)):
                        m.bounds()
    t1 = time.perf_counter()
    evaluate(net, va, stats)
    t2 = time.perf_counter()
    atomic.save_torch(ckpt, {"model": net.state_dict()})
    return dict(zip(EXTRAS, (t1 - t0, t2 - t1, time.perf_counter() - t2)))


def _epoch_seconds(job: dict) -> dict[str, Any]:
    """In each process: median seconds of one float epoch and one QAT epoch (eager; with ``job["compile"]``
    also compiled, and the one-off seconds of the first compiled epoch beyond the median)."""
    torch.set_num_threads(job["threads"])
    w = world()
    tr, va = job["train"], job["val"]
    stats = ParamStats.from_params(tr.params)
    specs = {
        c: Training(device=job["device"], batch_size=job["batch"], distributed={"processes": job["processes"]}, compile=c)
        for c in (False, True)
    }
    torch.manual_seed(0)
    net = MobileNetV1(job["width"])
    example = torch.zeros(8, 3, tr.images.shape[1], tr.images.shape[2])
    fq = float_to_fake(MobileNetV1(job["width"]).eval(), QuantConfig(), example)
    controller = PACTController(fq, start_epoch=0)
    controller(0, fq)  # quantised from the first step, bounds learned
    with tempfile.TemporaryDirectory() as tmp:
        runs = iter(range(10_000))

        def runner(model, phase, compile, **kw):
            def run():
                t0 = time.perf_counter()
                train(
                    model, tr, va, stats=stats, epochs=1, batch_size=job["batch"], lr=1e-3, ckpt_dir=Path(tmp) / f"{next(runs)}",
                    hardware=Hardware.from_spec(specs[compile], phase, w.local_rank), **kw,
                )  # fmt: skip
                return time.perf_counter() - t0

            return run

        got: dict[str, Any] = {"device": str(Hardware.from_spec(specs[False], "float", w.local_rank).device)}
        for phase, model in (("float", net), ("qat", fq)):
            kw = {"params_for_optimiser": pact_param_groups(fq, 1e-3)} if phase == "qat" else {}
            modes = {"": runner(model, phase, False, **kw)}
            if job["compile"]:
                modes["compiled "] = runner(model, phase, True, **kw)
            plain = None
            if w.size == 1:
                params = pact_param_groups(fq, 1e-3) if phase == "qat" else model.parameters()
                plain = PlainLoop(model, params, tr, stats, job["batch"])
                modes["plain "] = plain.epoch
            first = {tag: run() for tag, run in modes.items()}  # warm-up; compiles, when compiled
            times: dict[str, list[float]] = {tag: [] for tag in modes}
            for _ in range(job["repeats"]):  # eager and compiled epochs alternate: a busy machine slows both alike
                for tag, run in modes.items():
                    times[tag].append(run())
            for tag in modes:
                got[tag + phase] = statistics.median(times[tag])
                got[tag + phase + " compile"] = first[tag] - got[tag + phase]
            if plain is not None:
                steps = len(tr) // job["batch"]
                got[phase + " phases"] = plain.phases() | _extras(
                    model, controller if phase == "qat" else None, va, stats, steps, Path(tmp) / "ckpt.pt"
                )
    return got


def _print_phases(got: dict[str, Any], images: int) -> None:
    """The per-phase table: seconds per epoch, float and QAT, and each phase's QAT/float ratio."""
    f, q = got["float phases"], got["qat phases"]
    print(f"\nper-phase profile, one process, seconds per epoch of {images} images (the plain loop's phases, then the trainer's extras)")
    print(f"{'phase':>22} {'float s':>9} {'QAT s':>9} {'QAT/float':>10}")
    for name in (*PHASES, *EXTRAS):
        ratio = f"{q[name] / f[name]:>10.2f}" if f[name] > 1e-4 else f"{'-':>10}"
        print(f"{name:>22} {f[name]:>9.3f} {q[name]:>9.3f} {ratio}")
    tf, tq = sum(f.values()), sum(q.values())
    print(f"{'total':>22} {tf:>9.3f} {tq:>9.3f} {tq / tf:>10.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=256, help="training images per epoch")
    ap.add_argument("--val", type=int, default=0, help="validation images (default: images/12, the default app's ratio)")
    ap.add_argument("--size", type=int, default=64, help="crop size, pixels")
    ap.add_argument("--width", type=float, default=0.25, help="MobileNet-V1 width")
    ap.add_argument("--batch", type=int, default=32, help="global batch (split over the processes)")
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads in all, split over the processes")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--repeats", type=int, default=3, help="timed epochs (after one warm-up)")
    ap.add_argument("--compile", action="store_true", help="also time training.compile: true, in the same processes")
    args = ap.parse_args()
    cache = tempfile.TemporaryDirectory(prefix="inductor-")  # removed at exit
    if args.compile:  # a first run's compile time: nothing cached (the spawned processes inherit it)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache.name

    tr = render_synthetic(args.images, seed=1, size=args.size)
    va = render_synthetic(args.val or max(8, args.images // 12), seed=2, size=args.size)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    print(
        f"{args.images} images {args.size}x{args.size}, MobileNet-V1 width {args.width}, global batch {args.batch}, {args.threads} threads"
    )
    print(f"PACT activations: {pact_native.describe()}")
    print(
        f"{'processes':>9} {'device':>8} {'mode':>9} {'float img/s':>12} {'QAT img/s':>10} {'QAT/float':>10}"
        + (f" {'float x':>8} {'QAT x':>6} {'float compile s':>16} {'QAT compile s':>14}" if args.compile else "")
    )
    phases = None
    for p in args.processes:
        if cuda and p > torch.cuda.device_count():
            print(f"{p:>9} {'-':>8}  skipped: {torch.cuda.device_count()} GPU(s)")
            continue
        job = {
            "train": tr, "val": va, "width": args.width, "batch": args.batch, "repeats": args.repeats, "processes": p,
            "threads": max(1, args.threads // p), "device": args.device, "compile": args.compile,
        }  # fmt: skip
        got = launch(_epoch_seconds, job, Distributed(processes=p, backend="nccl" if cuda else "gloo"))
        images = (args.images // args.batch) * args.batch
        for tag in ("", "compiled ") if args.compile else ("",):
            f, q = got[tag + "float"], got[tag + "qat"]
            row = f"{p:>9} {got['device']:>8} {tag.strip() or 'eager':>9} {images / f:>12.0f} {images / q:>10.0f} {q / f:>10.2f}"
            if args.compile and tag:
                fc, qc = got["compiled float compile"], got["compiled qat compile"]
                row += f" {got['float'] / f:>8.2f} {got['qat'] / q:>6.2f} {fc:>16.1f} {qc:>14.1f}"
            elif args.compile:
                row += f" {'1.00':>8} {'1.00':>6} {'-':>16} {'-':>14}"
            print(row, flush=True)
        if "plain float" in got:
            f, q = got["plain float"], got["plain qat"]
            row = f"{p:>9} {got['device']:>8} {'plain':>9} {images / f:>12.0f} {images / q:>10.0f} {q / f:>10.2f}"
            print(row + f"   trainer/plain: float {f / got['float']:.2f}, QAT {q / got['qat']:.2f}", flush=True)
            phases = got
    if phases is not None:
        _print_phases(phases, (args.images // args.batch) * args.batch)


if __name__ == "__main__":
    main()
