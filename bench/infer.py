"""The reference integer engine against onnxruntime float on the default app's graph, images per second.

Side by side in one run, on the same images, batch and threads:

- qlspec engine: the integer graph the convert stage builds (the Deeploy-flavour export imported and
  optimised), run by `qlspec.engine.run_graph`: exact, the oracle of rungs ONNX and GRAPH;
- onnxruntime float32: the float network (torch.onnx export of the same MobileNet) on the same
  pre-processed images: what a float deployment would cost, the peer of the issue's "within 2x".

Without `--build`, the graph comes from a freshly initialised 3DDFA MobileNet-V1 x0.5 (120x120, 62
outputs: the default app's network; BatchNorm statistics from images, weights random, PTQ w8a8
percentile-calibrated, D fitted for int32) through the export path; speed depends on the weights
only a little (through the requantisers' clamping intervals: random weights make the engine about
10% slower than trained ones). With `--build DIR` (an applied app's build folder) it takes DIR/convert/graph and the
trained float network of DIR/train, and the validation images of DIR/data.

    python bench/infer.py [--build build/3ddfa-synthetic] [--batch 64] [--repeats 5] [--threads 1] [--profile]

`--profile` also prints the engine's time per op type. numpy's BLAS, torch and onnxruntime run on
`--threads` threads (set before numpy loads).
"""

from __future__ import annotations

import os
import sys

THREADS = next((sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--threads"), "1")
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, THREADS)  # numpy's BLAS on the same threads as onnxruntime

import argparse
import json
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from timing import median_time

from qlspec.engine.run import run_graph
from qlspec.graph.ir import Graph


def fresh_app(batch: int) -> tuple[Graph, torch.nn.Module, np.ndarray, np.ndarray]:
    """(optimised integer graph, float network, float images, integer inputs) of a fresh MobileNet-V1 x0.5."""
    from qlspec.export import fake_to_true, to_onnx
    from qlspec.graph.passes import optimise
    from qlspec.nets import registry
    from qlspec.onnx_import import import_onnx
    from qlspec.quant import QuantConfig, calibrate, float_to_fake

    torch.manual_seed(0)
    net = registry.build("3ddfa-mobilenet-v1", 0.5)
    x = torch.nn.functional.avg_pool2d(torch.rand(max(batch, 64), 3, 120, 120) * 2 - 1, 5, 1, 2)
    net.train()
    with torch.no_grad():
        net(x)  # BatchNorm statistics of image-like inputs
    net.eval()
    fq = float_to_fake(net, QuantConfig(fold_bn=True), x[:8])
    calibrate(fq, [x], method="percentile", percentile=99.99)
    ig = fake_to_true(fq, input_shape=(1, 3, 120, 120), samples=x)
    with tempfile.TemporaryDirectory(prefix="qlspec-bench-") as tmp:
        path = Path(tmp) / "network.onnx"
        path.write_bytes(to_onnx(ig, "deeploy").SerializeToString())
        info = ig.input_info
        graph = optimise(import_onnx(path, input_types={"input": (info.bits, info.signed)}))
    xb = x[:batch]
    return graph, net, xb.numpy(), ig.quantise_input(xb)


def applied_app(build: Path, batch: int) -> tuple[Graph, torch.nn.Module, np.ndarray, np.ndarray]:
    """The same four things from an applied app's build folder."""
    from qlspec.evaluation import load_split
    from qlspec.graph.io import load_graph
    from qlspec.nets import registry
    from qlspec.preprocess import InputTransform
    from qlspec.stages.convert import integer_inputs

    record = json.loads((build / "train" / "stage.json").read_text())["spec"]
    transform = InputTransform(
        float(record.get("preprocess.normalise.mean", 127.5)),
        float(record.get("preprocess.normalise.std", 128.0)),
        record.get("preprocess.channel_order", "BGR") == "RGB",
    )
    flavour = next(f for f in ("deeploy", "dory") if (build / "export" / f / "metadata.json").is_file())
    meta = json.loads((build / "export" / flavour / "metadata.json").read_text())
    images = load_split(build / "data", "val").images[:batch]
    net = registry.build_from_record(build / "train")
    net.load_state_dict(torch.load(build / "train" / "model.pt", map_location="cpu", weights_only=True))
    return load_graph(build / "convert" / "graph"), net.eval(), transform(images).numpy(), integer_inputs(images, meta["input"], transform)


def export_float(net: torch.nn.Module, floats: np.ndarray, path: Path) -> Path:
    """The float network as an ONNX file at `path`, batch size free (input ``x``, output ``y``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.onnx's legacy exporter, chosen on purpose (no onnxscript needed)
        torch.onnx.export(
            net,
            (torch.from_numpy(floats[:1]),),
            str(path),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
            opset_version=17,
            dynamo=False,
        )
    return path


def float_session(net: torch.nn.Module, floats: np.ndarray, threads: int, tmp: Path):
    """An onnxruntime session of the float network on `threads` threads."""
    import onnxruntime as ort

    path = export_float(net, floats, tmp / "float.onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def profile(graph: Graph, inputs: dict[str, np.ndarray], repeats: int) -> dict[str, float]:
    """Seconds per op type of one engine run (median over `repeats`), from the engine's observer hook."""
    runs: list[dict[str, float]] = []
    for _ in range(repeats):
        per_op: dict[str, float] = defaultdict(float)
        last = [time.perf_counter()]

        def observe(node, args, result, per_op=per_op, last=last) -> None:
            now = time.perf_counter()
            per_op[node.op] += now - last[0]
            last[0] = now

        run_graph(graph, inputs, observe=observe)
        runs.append(per_op)
    return {op: float(np.median([r[op] for r in runs])) for op in runs[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", type=Path, default=None, help="an applied app's build folder (default: a fresh network)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="threads for numpy's BLAS, torch and onnxruntime")
    ap.add_argument("--profile", action="store_true", help="also print the engine's time per op type")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    graph, net, floats, codes = applied_app(args.build, args.batch) if args.build else fresh_app(args.batch)
    inputs = {graph.inputs[0]: codes}
    n = len(codes)
    with tempfile.TemporaryDirectory(prefix="qlspec-bench-") as tmp:
        sess = float_session(net, floats, args.threads, Path(tmp))
        t_ort = median_time(lambda: sess.run(None, {"x": floats}), args.repeats)
    t_eng = median_time(lambda: run_graph(graph, inputs), args.repeats)

    source = str(args.build / "convert" / "graph") if args.build else "fresh MobileNet-V1 x0.5 (random weights, PTQ w8a8)"
    print(f"{source}, 120x120, batch {n}, {args.threads} thread(s), median of {args.repeats} runs")
    print(f"onnxruntime float32 (float network):   {n / t_ort:8.1f} img/s")
    print(f"qlspec engine (integer graph, exact):  {n / t_eng:8.1f} img/s")
    print(f"engine time / onnxruntime float time:  {t_eng / t_ort:8.2f}x")
    if args.profile:
        per_op = profile(graph, inputs, args.repeats)
        total = sum(per_op.values())
        for op, s in sorted(per_op.items(), key=lambda kv: -kv[1]):
            print(f"  {op:16s} {s * 1e3:8.1f} ms  {100 * s / total:5.1f}%")


if __name__ == "__main__":
    main()
