"""The validation images a generated app is checked on, and the row it earns against GRAPH.

Rungs ARMCL (stage verify, under qemu) and BOARD (stage deploy, on the board) run the same first
`n` validation images, fed as the integer codes the convert stage computes from the pixels, and
must equal the GRAPH rung's outputs (the optimised graph run by the reference engine) bit for bit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from qlspec.codegen.photos import Photo, check_app_outputs
from qlspec.data.faceset import FaceSet
from qlspec.evaluation import landmarks_from_outputs, load_split, load_stats, nme_row
from qlspec.face.store import load_face_model
from qlspec.graph.io import load_graph
from qlspec.preprocess import InputTransform
from qlspec.stages.convert import integer_inputs
from qlspec.stages.engine import StageContext


@dataclass(frozen=True)
class Samples:
    faces: FaceSet
    inputs: np.ndarray  # the network's integer input codes, in the graph input's container type
    expected: np.ndarray  # GRAPH's integer outputs on them (int64)
    eps: np.ndarray  # output quantum: outputs * eps are the normalised parameters


def validation_samples(ctx: StageContext, n: int) -> Samples:
    """The first `n` validation images (at most the set) with their integer inputs and GRAPH's outputs."""
    spec = ctx.spec
    meta = json.loads((ctx.inputs["export"] / spec.export.flavour / "metadata.json").read_text())
    graph = load_graph(ctx.inputs["convert"] / "graph")
    faces = load_split(ctx.inputs["data"], "val")
    faces = faces.subset(slice(0, min(n, len(faces))))
    q = integer_inputs(np.asarray(faces.images), meta["input"], InputTransform.from_spec(spec.preprocess))
    expected = np.load(ctx.inputs["convert"] / "outputs.npz")["graph"][: len(faces)]
    return Samples(
        faces, q.astype(graph.tensors[graph.inputs[0]].dtype), expected.astype(np.int64), np.asarray(meta["output"]["eps"], np.float64)
    )


def checked_row(rung: str, outputs: np.ndarray, samples: Samples, ctx: StageContext, **extra: Any) -> tuple[dict[str, Any], np.ndarray]:
    """(the report row of `rung`, the mask of outputs that differ from GRAPH) for these app outputs."""
    out = outputs.reshape(samples.expected.shape).astype(np.int64)
    bad = out != samples.expected
    landmarks = landmarks_from_outputs(out * samples.eps, load_stats(ctx.inputs["data"]), load_face_model(ctx.inputs["data"]))
    row = nme_row(
        rung,
        landmarks,
        samples.faces,
        max_abs_diff=float(np.abs((out - samples.expected) * samples.eps).max()),
        mismatches=int(bad.sum()),
        outputs=int(out.size),
        **extra,
    )
    return row, bad


def app_report(ctx: StageContext, codes: np.ndarray, outputs: np.ndarray, landmarks_json: Any, photos: list[Photo]) -> dict:
    """`check_app_outputs` of what the AI application wrote for `photos`, against the Python pipeline
    this stage's inputs fix: the convert stage's graph, the export's input and output quanta, the
    spec's pre-processing and the data stage's face model."""
    spec = ctx.spec
    meta = json.loads((ctx.inputs["export"] / spec.export.flavour / "metadata.json").read_text())
    return check_app_outputs(
        codes,
        outputs,
        landmarks_json,
        photos,
        graph=load_graph(ctx.inputs["convert"] / "graph"),
        input_meta=meta["input"],
        output_eps=meta["output"]["eps"],
        transform=InputTransform.from_spec(spec.preprocess),
        size=spec.preprocess.size,
        data_dir=ctx.inputs["data"],
    )
