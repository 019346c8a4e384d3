"""Rung FQI's executor against the reference engine and onnxruntime, on F2T's graph of a 3DDFA MobileNet.

The graph is the default app's architecture (MobileNet-V1 x0.5, 120x120, PTQ w8a8 with D fitted for
int32; BatchNorm statistics from images, weights random: the speed does not depend on them). Timed on
the same float images, median of `--repeats` runs, in this run:

- the reference engine (`qlspec.engine.run_graph`): rung TQ;
- the torch executor (`qlspec.engine.torch_run`): rung FQI, QAT's integer evaluation;
- onnxruntime on the DORY-flavour file (float32 Mul/Add/Div/Floor chains; not exact at int32 sizes).

Prints images per second of each, the ratios, and whether the integer outputs agree bit for bit.

    python bench/bench_fqi.py [--batch 64] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import os
import sys

THREADS = next((sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--threads"), "1")
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, THREADS)  # numpy's BLAS on the same threads as torch and onnxruntime

import argparse

import numpy as np
import torch
from timing import median_time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="threads for torch, numpy's BLAS and onnxruntime")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from qlspec.export import fake_to_true, run_onnxruntime, to_onnx
    from qlspec.nets import registry
    from qlspec.quant import QuantConfig, calibrate, float_to_fake

    torch.manual_seed(0)
    net = registry.build("3ddfa-mobilenet-v1", 0.5)
    x = torch.nn.functional.avg_pool2d(torch.rand(max(args.batch, 64), 3, 120, 120) * 2 - 1, 5, 1, 2)
    net.train()
    with torch.no_grad():
        net(x)
    fq = float_to_fake(net.eval(), QuantConfig(fold_bn=True), x[:8])
    calibrate(fq, [x], method="percentile", percentile=99.99)
    ig = fake_to_true(fq, input_shape=(1, 3, 120, 120), samples=x)
    xb = x[: args.batch]
    q = ig.quantise_input(xb)
    model = to_onnx(ig, "dory")

    t_ref = median_time(lambda: ig.run(xb, batch=args.batch), args.repeats)
    t_torch = median_time(lambda: ig.run(xb, batch=args.batch, engine="torch"), args.repeats)
    t_ort = median_time(lambda: run_onnxruntime(model, q, threads=args.threads), args.repeats)
    ref, fqi = ig.run(xb), ig.run(xb, engine="torch")
    ort = np.rint(run_onnxruntime(model, q, threads=args.threads)).astype(np.int64)
    n = len(xb)
    print(
        f"MobileNet-V1 x0.5 120x120, F2T graph (D {min(f.shift for f in ig.fits)}..{max(f.shift for f in ig.fits)}), "
        f"batch {n}, {args.threads} thread(s)"
    )
    print(f"reference engine (rung TQ):          {n / t_ref:8.1f} img/s")
    print(f"torch executor (rung FQI):           {n / t_torch:8.1f} img/s   {t_ref / t_torch:5.1f}x the reference")
    print(f"onnxruntime (DORY file, float32):    {n / t_ort:8.1f} img/s   {t_ref / t_ort:5.1f}x the reference")
    print(
        f"torch executor == reference: {np.array_equal(ref, fqi)}; onnxruntime differs on {int((ort != ref).sum())} of {ref.size} outputs"
    )


if __name__ == "__main__":
    main()
