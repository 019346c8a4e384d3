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

import numpy as np

from qlspec import atomic
from qlspec.codegen.build import BINARY, run_binary
from qlspec.codegen.toolchain import armcl_toolchain
from qlspec.errors import StageError
from qlspec.report import write_rungs
from qlspec.stages.engine import StageContext
from qlspec.stages.samples import checked_row, validation_samples


def run(ctx: StageContext) -> None:
    spec = ctx.spec
    tc = armcl_toolchain()
    samples = validation_samples(ctx, spec.verify.samples)
    binary = ctx.inputs["build"] / "armcl" / "bin" / BINARY
    result = run_binary(binary, [samples.inputs], tc, threads=spec.target.threads, cpu=spec.target.cpu)
    row, bad = checked_row("ARMCL", result.outputs[0], samples, ctx, backend="armcl", output_stage=spec.target.output_stage)
    exact = spec.target.output_stage == "exact"
    if exact and bad.any():
        first = int(np.argwhere(bad)[0][0])
        raise StageError(f"ARMCL differs from GRAPH on {int(bad.sum())} of {bad.size} outputs (first at validation image {first})",
                         where=str(binary))
    np.savez(ctx.out / "outputs.npz", armcl=result.outputs[0].reshape(bad.shape).astype(np.int64))
    write_rungs(ctx.out, [row])
    emulator = " ".join(tc.run_prefix(spec.target.cpu)) or "native"
    atomic.write_json(ctx.out / "verify.json", {
        "emulator": emulator, "samples": len(samples.inputs), "threads": spec.target.threads, "wall_s": round(result.wall_s, 2),
        "median_ms_per_image_emulated": round(result.median_ms, 3), "mismatches": int(bad.sum()), "outputs": int(bad.size),
        "output_stage": spec.target.output_stage})
    note = "" if exact else " (armcl-native output stage: measured, not required to be 0)"
    ctx.log(f"  ARMCL vs GRAPH: {int(bad.sum())} mismatches of {bad.size} outputs on {len(samples.inputs)} images{note} "
            f"({emulator}, {result.wall_s:.1f} s)")
