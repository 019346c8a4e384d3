"""Reference integer engine vs onnxruntime on the same DORY-flavour MobileNet-like graph.

Both run the graph QuantLab would export (Conv -> Mul/Add/Div/Floor/Clip, GlobalAveragePool ->
requant, Gemm): onnxruntime in float32 on integer-valued tensors, qlspec's engine on the imported
and optimised integer graph. Prints the median time per batch of each and their ratio, measured in
this run, and whether the outputs agree bit for bit.

    python bench/bench_engine.py [--size 96] [--width 32] [--blocks 6] [--batch 8] [--repeats 5]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # both sides single-threaded (set before numpy loads)

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "converter"))  # the DORY-flavour graph builder shared with the tests

from onnx_builders import mobilenet_like, without_annotations
from timing import median_time

from qlspec.engine import run_graph
from qlspec.graph.passes import optimise
from qlspec.graph.summary import summarise
from qlspec.onnx_import import import_onnx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    args = ap.parse_args()

    import onnxruntime as ort

    rng = np.random.default_rng(0)
    model, shape = mobilenet_like(rng, size=args.size, width=args.width, blocks=args.blocks)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mobilenet_like.onnx"
        path.write_bytes(model.SerializeToString())
        g = optimise(import_onnx(path, input_types={"input": (8, False)}))
    x = rng.integers(0, 256, (args.batch, *shape[1:]))

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    sess = ort.InferenceSession(without_annotations(model).SerializeToString(), opts, providers=["CPUExecutionProvider"])
    xf = x.astype(np.float32)
    t_ort = median_time(lambda: sess.run(None, {"input": xf}), args.repeats)
    t_eng = median_time(lambda: run_graph(g, {"input": x}), args.repeats)

    ours = run_graph(g, {"input": x})[g.outputs[0]]
    theirs = sess.run(None, {"input": xf})[0]
    s = summarise(g)
    print(
        f"graph: {args.blocks} dw/pw blocks, input {args.batch}x3x{args.size}x{args.size}, "
        f"{s.macs * args.batch / 1e6:.1f} MMACs per batch, ops {s.op_counts}"
    )
    print(f"onnxruntime (float32, {args.threads} thread(s)): {t_ort * 1e3:8.1f} ms/batch")
    print(f"qlspec engine (integer, exact):        {t_eng * 1e3:8.1f} ms/batch")
    print(f"ratio engine/onnxruntime: {t_eng / t_ort:.1f}x; outputs bit-exact vs onnxruntime: {np.array_equal(ours, theirs)}")


if __name__ == "__main__":
    main()
