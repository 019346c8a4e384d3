"""The verification report: one row per rung of the ladder, as report.json and report.md.

Rungs, in ladder order (DESIGN.md section 5): MEAN (the mean-parameter predictor, a baseline, not a
rung), FP, FQ, FQI (the fake-quantised net evaluated with the exported integer arithmetic), TQ,
ONNX, GRAPH, ARMCL (or CPU, the same C++ built for this machine), BOARD. Each stage that produces rungs writes ``rungs.json`` (a list of
rows) into its outputs; the report gathers the rows of the stages that are up to date.

A row: rung, nme (%), n (samples), and against the previous rung max_abs_diff (largest absolute
difference of the outputs, in output units) and mismatches (count of differing integer outputs,
where both rungs are integer; null otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from qlspec import atomic

LADDER = ("MEAN", "FP", "FQ", "FQI", "TQ", "ONNX", "GRAPH", "ARMCL", "CPU", "BOARD")
COLUMNS = ("rung", "nme", "max_abs_diff", "mismatches", "n")


def row(rung: str, *, nme: float | None, n: int, max_abs_diff: float | None = None,
        mismatches: int | None = None, **extra: Any) -> dict[str, Any]:
    """One report row; `extra` keeps further measurements (NME per yaw bin, timings)."""
    if rung not in LADDER:
        raise ValueError(f"unknown rung {rung!r} (ladder: {', '.join(LADDER)})")
    return {"rung": rung, "nme": nme, "max_abs_diff": max_abs_diff, "mismatches": mismatches, "n": n, **extra}


def write_rungs(folder: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    atomic.write_json(folder / "rungs.json", list(rows))


def gather(stage_dirs: Iterable[Path]) -> list[dict[str, Any]]:
    """The rows of these stage folders, in ladder order."""
    rows: list[dict[str, Any]] = []
    for folder in stage_dirs:
        path = folder / "rungs.json"
        if path.is_file():
            rows += json.loads(path.read_text())
    return sorted(rows, key=lambda r: LADDER.index(r["rung"]))


def write_report(build_dir: Path, name: str, rows: list[dict[str, Any]], stages: Mapping[str, str],
                 sections: Mapping[str, str] = {}) -> None:
    """report.json and report.md in `build_dir`; `stages` maps each stage to its state; `sections`
    are further markdown sections (title -> body) appended to report.md."""
    atomic.write_json(build_dir / "report.json", {"name": name, "rows": rows, "stages": dict(stages)})
    atomic.write_text(build_dir / "report.md", render_markdown(name, rows, stages, sections))


def render_markdown(name: str, rows: list[dict[str, Any]], stages: Mapping[str, str],
                    sections: Mapping[str, str] = {}) -> str:
    lines = [f"# {name}: verification report", "", "| rung | NME % | max abs diff | mismatches | n |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c)) for c in COLUMNS) + " |")
    lines += ["", "NME: mean 2D landmark error / sqrt(w*h) of the ground-truth 68-point box, %.",
              "MEAN: a predictor that always outputs the mean training parameters (baseline).",
              "FQI: the fake-quantised network evaluated with the integer arithmetic the export writes "
              "(exact accumulators, F2T's requantisers, pools as sums); TQ must equal it bit for bit.",
              "max abs diff, mismatches: against the rung above (ARMCL, CPU and BOARD: against GRAPH).", "", "## Stages", ""]
    lines += [f"- {stage}: {state}" for stage, state in stages.items()]
    for title, body in sections.items():
        lines += ["", f"## {title}", "", body.rstrip()]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
