"""Training speed: images/s of float training and PACT QAT, in 1 and 2 processes, on the available device.

Each row is measured in the same run: one epoch of `qlspec.training.trainer.train` (the loop the train
and quantise stages run), median of ``--repeats`` epochs after a warm-up, in every process of a group
launched by `qlspec.training.distributed.launch` (gloo on the CPU, nccl on GPUs). The CPU threads are
split between the processes (``--threads`` in all), so the rows compare the same machine. QAT/float is
the time of a QAT epoch over that of a float epoch, both from the same row.

    python bench/train_speed.py                       # defaults: 256 images of 64x64, width 0.25
    python bench/train_speed.py --images 2048 --size 120 --width 0.5 --batch 64 --processes 1 2 4
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import median_time

from qlspec.data.synthetic import render_synthetic
from qlspec.face.params import ParamStats
from qlspec.nets.mobilenet_v1 import MobileNetV1
from qlspec.quant import PACTController, QuantConfig, float_to_fake, pact_param_groups
from qlspec.spec.models import Distributed, Training
from qlspec.training.distributed import launch, world
from qlspec.training.hardware import Hardware
from qlspec.training.trainer import train


def _epoch_seconds(job: dict) -> dict[str, float]:
    """In each process: median seconds of one float epoch and one QAT epoch."""
    torch.set_num_threads(job["threads"])
    w = world()
    tr, va = job["train"], job["val"]
    stats = ParamStats.from_params(tr.params)
    spec = Training(device=job["device"], batch_size=job["batch"], distributed={"processes": job["processes"]})
    torch.manual_seed(0)
    net = MobileNetV1(job["width"])
    example = torch.zeros(8, 3, tr.images.shape[1], tr.images.shape[2])
    fq = float_to_fake(MobileNetV1(job["width"]).eval(), QuantConfig(), example)
    PACTController(fq, start_epoch=0)(0, fq)  # quantised from the first step, bounds learned
    with tempfile.TemporaryDirectory() as tmp:
        runs = iter(range(10_000))

        def epoch(model, phase, **kw):
            def run():
                train(
                    model, tr, va, stats=stats, epochs=1, batch_size=job["batch"], lr=1e-3, ckpt_dir=Path(tmp) / f"{next(runs)}",
                    hardware=Hardware.from_spec(spec, phase, w.local_rank), **kw,
                )  # fmt: skip

            return median_time(run, job["repeats"])

        t_float = epoch(net, "float")
        t_qat = epoch(fq, "qat", params_for_optimiser=pact_param_groups(fq, 1e-3))
    return {"float": t_float, "qat": t_qat, "device": str(Hardware.from_spec(spec, "float", w.local_rank).device)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=256, help="training images per epoch")
    ap.add_argument("--size", type=int, default=64, help="crop size, pixels")
    ap.add_argument("--width", type=float, default=0.25, help="MobileNet-V1 width")
    ap.add_argument("--batch", type=int, default=32, help="global batch (split over the processes)")
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads in all, split over the processes")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--repeats", type=int, default=3, help="timed epochs (after one warm-up)")
    args = ap.parse_args()

    tr = render_synthetic(args.images, seed=1, size=args.size)
    va = render_synthetic(8, seed=2, size=args.size)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    print(
        f"{args.images} images {args.size}x{args.size}, MobileNet-V1 width {args.width}, global batch {args.batch}, {args.threads} threads"
    )
    print(f"{'processes':>9} {'device':>8} {'float img/s':>12} {'QAT img/s':>10} {'QAT/float':>10}")
    for p in args.processes:
        if cuda and p > torch.cuda.device_count():
            print(f"{p:>9} {'-':>8}  skipped: {torch.cuda.device_count()} GPU(s)")
            continue
        job = {
            "train": tr, "val": va, "width": args.width, "batch": args.batch, "repeats": args.repeats, "processes": p,
            "threads": max(1, args.threads // p), "device": args.device,
        }  # fmt: skip
        got = launch(_epoch_seconds, job, Distributed(processes=p, backend="nccl" if cuda else "gloo"))
        images = (args.images // args.batch) * args.batch
        print(f"{p:>9} {got['device']:>8} {images / got['float']:>12.0f} {images / got['qat']:>10.0f} {got['qat'] / got['float']:>10.2f}")


if __name__ == "__main__":
    main()
