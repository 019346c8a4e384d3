"""Stage `verify`: rung ARMCL, the cross-built application run under qemu-aarch64 as a Cortex-A72
(natively on an aarch64 machine) on the same `verify.samples` validation images as the integer rungs;
with ``target.backend: cpu``, rung CPU, the same generated C++ without ACL, run on this machine.

Its integer inputs come from the pixels exactly as the convert stage makes them; its outputs must
equal the GRAPH rung's (the optimised graph run by the reference engine) bit for bit: any mismatch
stops the stage with its count and the first sample that differs. With ``target.output_stage:
armcl-native`` the app uses ARM-CL's own requantisation, and the mismatches are measured and reported
instead. Outputs: outputs.npz (``armcl`` or ``cpu``), rungs.json (row ARMCL or CPU: NME, mismatches against
GRAPH), verify.json (emulator, wall time, median milliseconds per image; under emulation that says
nothing about the board's speed).

Then the AI application (qlspec-app) runs on up to `APP_PHOTOS` of the same faces as photo files
(`qlspec.codegen.photos`: PNG and JPEG, resized into larger frames, with crop boxes) and is checked
against the Python pipeline on the same files: its input codes must equal Python's pre-processing
(0 mismatches), its network outputs GRAPH run on those codes, and its landmarks Python's
post-processing within `LANDMARK_TOLERANCE_PX`. Outputs: app.json (the three checks, timings) and
app_landmarks.json (what the app wrote).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from qlspec import atomic
from qlspec.codegen.build import APP, BINARY, run_app, run_binary
from qlspec.codegen.photos import app_arguments, app_failure, write_photos
from qlspec.codegen.toolchain import toolchain_for
from qlspec.errors import StageError
from qlspec.report import write_rungs
from qlspec.stages.engine import StageContext
from qlspec.stages.samples import Samples, app_report, checked_row, validation_samples

APP_PHOTOS = 64
RUNG = {"armcl": "ARMCL", "cpu": "CPU"}


def run(ctx: StageContext) -> None:
    spec = ctx.spec
    backend = spec.target.backend
    rung = RUNG[backend]
    tc = toolchain_for(backend)
    samples = validation_samples(ctx, spec.verify.samples)
    binary = ctx.inputs["build"] / backend / "bin" / BINARY
    result = run_binary(binary, [samples.inputs], tc, threads=spec.target.threads, cpu=spec.target.cpu)
    row, bad = checked_row(rung, result.outputs[0], samples, ctx, backend=backend, output_stage=spec.target.output_stage)
    exact = spec.target.output_stage == "exact"
    if exact and bad.any():
        first = int(np.argwhere(bad)[0][0])
        raise StageError(
            f"{rung} differs from GRAPH on {int(bad.sum())} of {bad.size} outputs (first at validation image {first})", where=str(binary)
        )
    outputs: dict[str, Any] = {backend: result.outputs[0].reshape(bad.shape).astype(np.int64)}
    np.savez(ctx.out / "outputs.npz", **outputs)
    write_rungs(ctx.out, [row])
    emulator = " ".join(tc.run_prefix(spec.target.cpu)) or "native"
    atomic.write_json(
        ctx.out / "verify.json",
        {
            "emulator": emulator,
            "samples": len(samples.inputs),
            "threads": spec.target.threads,
            "wall_s": round(result.wall_s, 2),
            "median_ms_per_image": round(result.median_ms, 3),
            "emulated": bool(tc.emulator),
            "mismatches": int(bad.sum()),
            "outputs": int(bad.size),
            "output_stage": spec.target.output_stage,
        },
    )
    note = "" if exact else " (armcl-native output stage: measured, not required to be 0)"
    ctx.log(
        f"  {rung} vs GRAPH: {int(bad.sum())} mismatches of {bad.size} outputs on {len(samples.inputs)} images{note} "
        f"({emulator}, {result.wall_s:.1f} s)"
    )
    check_app(ctx, samples, tc)


def check_app(ctx: StageContext, samples: Samples, tc) -> None:
    """The AI application on photos against the Python pipeline (module docstring); writes app.json."""
    spec = ctx.spec
    app = ctx.inputs["build"] / spec.target.backend / "bin" / APP
    with tempfile.TemporaryDirectory(prefix="qlspec-photos-") as tmp:
        photos = write_photos(samples.faces.images[:APP_PHOTOS], Path(tmp))
        result = run_app(app, app_arguments(photos), tc, threads=spec.target.threads, cpu=spec.target.cpu)
        report = app_report(ctx, result.codes, result.outputs, result.landmarks_json, photos)
    report.update(median_ms_per_photo=result.timing["median_ms_per_image"], wall_s=round(result.wall_s, 2))
    atomic.write_json(ctx.out / "app.json", report)
    atomic.write_json(ctx.out / "app_landmarks.json", result.landmarks_json)
    ctx.log(
        f"  app on {report['photos']} photos: {report['preprocess_mismatches']} of {report['input_codes']} input codes differ "
        f"from Python's pre-processing; network {report['network_mismatches_vs_graph']} mismatches against GRAPH; landmarks "
        f"within {report['landmark_max_abs_diff_px']:.1e} px of Python's post-processing"
    )
    failure = app_failure(report, exact=spec.target.output_stage == "exact")
    if failure:
        raise StageError(failure, where=str(app))
