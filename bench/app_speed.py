"""The generated C++ (`cpu` backend: the ARM-CL project's kernels without ACL, built for this machine)
against onnxruntime on the same trained network, images per second, one image at a time, side by
side in one run:

- qlspec cpu: the integer graph of the convert stage as generated C++ (exact, bit for bit GRAPH);
- onnxruntime float32: the train stage's float network exported with torch.onnx;
- onnxruntime int8 QDQ: that float model quantised by onnxruntime (static, per-channel int8 weights,
  uint8 activations, calibrated on validation images): onnxruntime's own int8 path, not bit-exact
  with anything of ours.

Each at one and two threads (ORT's intra-op threads; the cpu backend's kernels are single-threaded,
so its two-thread figure shows that). Needs an applied app (train, export and convert stages):

    python bench/app_speed.py [--build build/3ddfa-synthetic] [--images 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", type=Path, default=Path("build/3ddfa-synthetic"), help="an applied app's build folder")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    import logging
    import warnings

    import onnxruntime as ort

    warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.onnx's legacy exporter, chosen on purpose
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime.quantization's advice on pre-processing
    from infer import applied_app, export_float
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from qlspec.codegen.build import build_project, run_binary
    from qlspec.codegen.project import write_project
    from qlspec.codegen.toolchain import host_toolchain
    from qlspec.engine.run import run_graph

    graph, net, floats, codes = applied_app(args.build, args.images)  # bench/infer.py: one reader of an applied build
    codes = codes.astype(graph.tensors[graph.inputs[0]].dtype)
    n = len(floats)
    results: dict[str, dict[int, float]] = {}

    with tempfile.TemporaryDirectory(prefix="qlspec-bench-") as tmp_name:
        tmp = Path(tmp_name)
        # qlspec: generated C++, built here with the host compiler
        tc = host_toolchain()
        write_project(graph, tmp / "cpu", backend="cpu", cpu="native")
        binary = build_project(tmp / "cpu", tc)
        ours = {}
        for threads in (1, 2):
            r = run_binary(binary, [codes], tc, threads=threads, repeat=args.repeats)
            ours[threads] = 1000.0 / r.median_ms
            out = r.outputs[0]
        exact = np.array_equal(out.reshape(n, -1), run_graph(graph, {graph.inputs[0]: codes})[graph.outputs[0]].reshape(n, -1))
        results["qlspec cpu (int8, exact)"] = ours

        # onnxruntime: the float network and its int8 QDQ quantisation
        float_path, qdq_path = export_float(net, floats, tmp / "float.onnx"), tmp / "qdq.onnx"

        class Calibration(CalibrationDataReader):
            def __init__(self) -> None:
                self.batches = iter({"x": floats[i : i + 1]} for i in range(min(n, 32)))

            def get_next(self):
                return next(self.batches, None)

        quantize_static(
            str(float_path),
            str(qdq_path),
            Calibration(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        for label, path in (("onnxruntime float32", float_path), ("onnxruntime int8 QDQ", qdq_path)):
            results[label] = {}
            for threads in (1, 2):
                opts = ort.SessionOptions()
                opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
                sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
                for i in range(min(n, 8)):  # warm-up
                    sess.run(None, {"x": floats[i : i + 1]})
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    for i in range(n):
                        sess.run(None, {"x": floats[i : i + 1]})
                    times.append((time.perf_counter() - t0) / n)
                results[label][threads] = 1.0 / float(np.median(times))

    print(
        f"{n} validation images of {args.build}, one image at a time, median of {args.repeats} passes; outputs of qlspec cpu "
        f"{'equal' if exact else 'DIFFER FROM'} GRAPH"
    )
    print(f"{'':28s} {'1 thread':>12s} {'2 threads':>12s}   (images/s)")
    for label, by in results.items():
        print(f"{label:28s} {by[1]:12.1f} {by[2]:12.1f}")
    base = results["qlspec cpu (int8, exact)"]
    for label in ("onnxruntime float32", "onnxruntime int8 QDQ"):
        print(f"qlspec cpu / {label}: {base[1] / results[label][1]:.2f}x at 1 thread, {base[2] / results[label][2]:.2f}x at 2 threads")


if __name__ == "__main__":
    main()
