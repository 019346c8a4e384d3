"""Stage `convert`: the exported QuantLab ONNX file becomes the qlspec integer graph (rungs ONNX, GRAPH).

Reads the primary flavour (`export.flavour`) of the export stage, as a user's own QuantLab file
would be read: import (rung ONNX: the file as parsed, run by the reference engine, against TQ), then
the optimisation passes (rung GRAPH: the optimised graph against ONNX). Both rungs run on the same
`verify.samples` validation images as TQ; their integer inputs come from the pixels through the
input quantiser the export's metadata declares.

Outputs: graph/ (graph.json + constants.npz, what the backends build from), summary.json and
summary.txt (ops, MACs, weight bytes, peak activation bytes with and without the memory plan),
outputs.npz (integer outputs of both rungs), rungs.json (rows ONNX, GRAPH).
"""

from __future__ import annotations

import json

import numpy as np

from qlspec.engine.ops.quantise import Quantise
from qlspec.engine.run import run_graph
from qlspec.evaluation import landmarks_from_outputs, load_split, load_stats, nme_row
from qlspec.face.store import load_face_model
from qlspec.graph.io import save_graph
from qlspec.graph.passes import optimise
from qlspec.graph.summary import summarise
from qlspec.onnx_import import import_onnx
from qlspec.preprocess import InputTransform
from qlspec.report import write_rungs
from qlspec.stages.engine import StageContext

BATCH = 64


def integer_inputs(images: np.ndarray, input_meta: dict, transform: InputTransform) -> np.ndarray:
    """uint8 BGR images -> the exported network's integer input: the spec's pre-processing, then the
    input quantiser the export's metadata declares (the IR's `Quantise` op), as the fake-quantised
    net saw them."""
    quantise = Quantise(eps=float(input_meta["eps"]), lo=int(input_meta["lo"]), hi=int(input_meta["hi"]), rounding=input_meta["rounding"])
    return quantise.run(transform(images).numpy())


def run(ctx: StageContext) -> None:
    spec = ctx.spec
    folder = ctx.inputs["export"] / spec.export.flavour
    meta = json.loads((folder / "metadata.json").read_text())
    name_in, name_out = meta["input"]["name"], meta["output"]["name"]
    parsed = import_onnx(folder / "network.onnx", input_types={name_in: (meta["input"]["bits"], meta["input"]["signed"])})
    graph = optimise(parsed)
    save_graph(graph, ctx.out / "graph")
    summary = summarise(graph)
    (ctx.out / "summary.txt").write_text(summary.to_text() + "\n")
    (ctx.out / "summary.json").write_text(
        json.dumps({"parsed": summarise(parsed).to_dict(), "optimised": summary.to_dict()}, indent=1, default=str) + "\n"
    )

    faces = load_split(ctx.inputs["data"], "val")
    faces = faces.subset(slice(0, min(spec.verify.samples, len(faces))))
    stats = load_stats(ctx.inputs["data"])
    face_model = load_face_model(ctx.inputs["data"])
    q = integer_inputs(np.asarray(faces.images), meta["input"], InputTransform.from_spec(spec.preprocess))
    eps = np.asarray(meta["output"]["eps"], np.float64)
    tq = np.load(ctx.inputs["export"] / "tq_outputs.npz")["output"]

    def engine(g):
        return np.concatenate([run_graph(g, {name_in: q[s : s + BATCH]})[name_out] for s in range(0, len(q), BATCH)]).astype(np.int64)

    rows, previous = [], tq
    outputs = {}
    for rung, g in (("ONNX", parsed), ("GRAPH", graph)):
        out = engine(g)
        outputs[rung] = out
        rows.append(
            nme_row(
                rung,
                landmarks_from_outputs(out * eps, stats, face_model),
                faces,
                max_abs_diff=float(np.abs((out - previous) * eps).max()),
                mismatches=int((out != previous).sum()),
                outputs=int(out.size),
                flavour=spec.export.flavour,
            )
        )
        previous = out
    np.savez(ctx.out / "outputs.npz", **{k.lower(): v for k, v in outputs.items()})
    write_rungs(ctx.out, rows)
    ctx.log(f"  {summary.to_text().splitlines()[0]}")
    ctx.log(f"  ONNX vs TQ: {rows[0]['mismatches']} mismatches; GRAPH vs ONNX: {rows[1]['mismatches']} of {rows[1]['outputs']}")
