"""Stage `compare`: PTQ against PACT QAT from the same trained float network, per bit-width.

For every algorithm in `compare.algorithms` and every width b in `compare.bits`, the quantise stage's
own code runs with `quantisation.algorithm` and both bit-widths replaced (weights and activations
at b), everything else as the spec says, into ``<variant>/`` (e.g. ``ptq-w4a4/``). Each variant's wall
time is measured. A variant whose folder already holds its rungs.json is not run again, so an
interrupted comparison resumes.

Outputs: one folder per variant, compare.json (rows: algorithm, bits, nme %, seconds; plus FP and the
mean-predictor baseline), compare.md (the table) and compare.png (the chart).
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from qlspec import atomic
from qlspec.plots import ptq_vs_qat_chart
from qlspec.spec.models import AppSpec
from qlspec.stages import quantise
from qlspec.stages.engine import StageContext

NAMES = {"ptq": "PTQ", "pact": "PACT QAT"}


def variant(spec: AppSpec, algorithm: str, bits: int) -> AppSpec:
    """`spec` with the quantisation algorithm and both bit-widths replaced."""
    q = spec.quantisation.model_copy(
        update={"algorithm": algorithm, "bits": spec.quantisation.bits.model_copy(update={"weights": bits, "activations": bits})}
    )
    return spec.model_copy(update={"quantisation": q})


def run(ctx: StageContext) -> None:
    spec = ctx.spec
    rows: list[dict[str, Any]] = []
    for bits in spec.compare.bits:
        for algorithm in spec.compare.algorithms:
            folder = ctx.out / f"{algorithm}-w{bits}a{bits}"
            done = folder / "rungs.json"
            if not done.is_file():
                folder.mkdir(parents=True, exist_ok=True)
                ctx.log(f"  {NAMES[algorithm]} w{bits}a{bits}")
                started = time.perf_counter()
                quantise.run(dataclasses.replace(ctx, spec=variant(spec, algorithm, bits), out=folder))
                (folder / "seconds.txt").write_text(f"{time.perf_counter() - started:.1f}\n")
            fq = json.loads(done.read_text())[0]
            rows.append(
                {
                    "algorithm": algorithm,
                    "bits": bits,
                    "nme": fq["nme"],
                    "n": fq["n"],
                    "seconds": float((folder / "seconds.txt").read_text()),
                }
            )
    reference = {r["rung"]: r for r in json.loads((ctx.inputs["train"] / "rungs.json").read_text())}
    result = {"rows": rows, "fp_nme": reference["FP"]["nme"], "mean_nme": reference["MEAN"]["nme"]}
    atomic.write_json(ctx.out / "compare.json", result)
    atomic.write_text(ctx.out / "compare.md", render(result))
    chart = {NAMES[a]: {r["bits"]: r["nme"] / 100 for r in rows if r["algorithm"] == a} for a in spec.compare.algorithms}
    ptq_vs_qat_chart(chart, ctx.out / "compare.png", float_nme=result["fp_nme"] / 100, baseline_nme=result["mean_nme"] / 100)


def render(result: dict[str, Any]) -> str:
    lines = [
        "| algorithm | bits (w/a) | NME % | vs FP (points) | wall time s |",
        "|---|---|---|---|---|",
        f"| FP (float) | 32 | {result['fp_nme']:.2f} | - | - |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {NAMES[r['algorithm']]} | {r['bits']}/{r['bits']} | {r['nme']:.2f} | "
            f"{r['nme'] - result['fp_nme']:+.2f} | {r['seconds']:.1f} |"
        )
    lines.append(f"| mean-parameter predictor | - | {result['mean_nme']:.2f} | - | - |")
    return "\n".join(lines) + "\n"
