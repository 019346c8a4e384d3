"""Stage `verify`: rung ARMCL, the cross-built application run under qemu-aarch64 as a Cortex-A72
(natively on an aarch64 machine) on the same `verify.samples` validation images as the integer rungs.

Its integer inputs come from the pixels exactly as the convert stage makes them; its outputs must
equal the GRAPH rung's (the optimised graph run by the reference engine) bit for bit: any mismatch
stops the stage with its count and the first sample that differs. With ``target.output_stage:
armcl-native`` the app uses ARM-CL's own requantisation, and the mismatches are measured and reported
instead. Outputs: outputs.npz (``armcl``),
rungs.json (row ARMCL: NME, mismatches against GRAPH), verify.json (emulator, wall time, median
milliseconds per image under emulation, which says nothing about the board's speed).
"""

from __future__ import annotations

import json

import numpy as np

from qlspec import atomic
from qlspec.codegen.build import BINARY, run_binary
from qlspec.codegen.toolchain import armcl_toolchain
from qlspec.errors import StageError
from qlspec.evaluation import landmarks_from_outputs, load_split, load_stats, nme_row
from qlspec.face.store import load_face_model
from qlspec.graph.io import load_graph
from qlspec.preprocess import InputTransform
from qlspec.report import write_rungs
from qlspec.stages.convert import integer_inputs
from qlspec.stages.engine import StageContext


def run(ctx: StageContext) -> None:
    spec = ctx.spec
    tc = armcl_toolchain()
    meta = json.loads((ctx.inputs["export"] / spec.export.flavour / "metadata.json").read_text())
    graph = load_graph(ctx.inputs["convert"] / "graph")
    expected = np.load(ctx.inputs["convert"] / "outputs.npz")["graph"]
    faces = load_split(ctx.inputs["data"], "val")
    faces = faces.subset(slice(0, min(spec.verify.samples, len(faces))))
    q = integer_inputs(faces.images, meta["input"], InputTransform.from_spec(spec.preprocess))
    q = q.astype(graph.tensors[graph.inputs[0]].dtype)
    binary = ctx.inputs["build"] / "armcl" / "bin" / BINARY
    result = run_binary(binary, [q], tc, threads=spec.target.threads, cpu=spec.target.cpu)
    out = result.outputs[0].reshape(expected.shape).astype(np.int64)
    bad = out != expected
    exact = spec.target.output_stage == "exact"
    if exact and bad.any():
        first = int(np.argwhere(bad)[0][0])
        raise StageError(f"ARMCL differs from GRAPH on {int(bad.sum())} of {out.size} outputs (first at validation image {first})",
                         where=str(binary))
    eps = np.asarray(meta["output"]["eps"], np.float64)
    row = nme_row("ARMCL", landmarks_from_outputs(out * eps, load_stats(ctx.inputs["data"]), load_face_model(ctx.inputs["data"])),
                  faces, max_abs_diff=float(np.abs((out - expected) * eps).max()), mismatches=int(bad.sum()), outputs=int(out.size),
                  backend="armcl", output_stage=spec.target.output_stage)
    np.savez(ctx.out / "outputs.npz", armcl=out)
    write_rungs(ctx.out, [row])
    emulator = " ".join(tc.run_prefix(spec.target.cpu)) or "native"
    atomic.write_json(ctx.out / "verify.json", {
        "emulator": emulator, "samples": len(q), "threads": spec.target.threads, "wall_s": round(result.wall_s, 2),
        "median_ms_per_image_emulated": round(result.median_ms, 3), "mismatches": int(bad.sum()), "outputs": int(out.size),
        "output_stage": spec.target.output_stage})
    note = "" if exact else " (armcl-native output stage: measured, not required to be 0)"
    ctx.log(f"  ARMCL vs GRAPH: {int(bad.sum())} mismatches of {out.size} outputs on {len(q)} images{note} "
            f"({emulator}, {result.wall_s:.1f} s)")
