"""The verification report: one row per rung of the ladder, as report.json and report.md.

Rungs, in ladder order (DESIGN.md section 5): MEAN (the mean-parameter predictor, a baseline, not a
rung), FP, FQ, FQI (the fake-quantised net evaluated with the exported integer arithmetic), TQ,
ONNX, GRAPH, ARMCL (or CPU, the same C++ built for this machine), BOARD. Each stage that produces rungs writes ``rungs.json`` (a list of
rows) into its outputs; the report gathers the rows of the stages that are up to date.

A row: rung, nme (%), n (samples), and against the previous rung max_abs_diff (largest absolute
difference of the outputs, in output units) and mismatches (count of differing integer outputs,
where both rungs are integer; null otherwise).

report.md leads with the ladder table the README shows (rung with its description | NME % |
against the rung above), then the further sections (graph, requantisers, pictures, backend), then
each stage's state.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from qlspec import atomic

LADDER = ("MEAN", "FP", "FQ", "FQI", "TQ", "ONNX", "GRAPH", "ARMCL", "CPU", "BOARD")


def row(
    rung: str, *, nme: float | None, n: int, max_abs_diff: float | None = None, mismatches: int | None = None, **extra: Any
) -> dict[str, Any]:
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


#: What each rung is, where the spec does not say more (`rung_labels`).
DESCRIPTIONS = {
    "MEAN": "always the mean parameters",
    "FP": "float network",
    "FQ": "float fake-quantisation",
    "FQI": "the same net evaluated with the exported integer arithmetic",
    "TQ": "F2T's integer graph, reference engine",
    "ONNX": "exported file, reference engine",
    "GRAPH": "optimised qlspec graph",
    "ARMCL": "generated ARM-CL C++, aarch64, under qemu as a Cortex-A72",
    "CPU": "the same generated C++ without ACL, built for this machine",
    "BOARD": "the app on the board",
}
#: The rung each rung is checked against, where it is not the rung above it in the ladder.
REFERENCE = {"ARMCL": "GRAPH", "CPU": "GRAPH", "BOARD": "GRAPH"}
_ARCH_NAMES = {"3ddfa-mobilenet-v1": "MobileNet-V1", "3ddfa-resnet22": "ResNet-22"}


def rung_labels(spec: Any) -> dict[str, str]:
    """`DESCRIPTIONS` with what the resolved spec adds: the network (``float MobileNet-V1 x0.5``),
    the quantiser (``PACT w8a8, float fake-quantisation``) and where ARMCL runs (qemu or the board)."""
    labels = dict(DESCRIPTIONS)
    net, q = spec.network, spec.quantisation
    labels["FP"] = f"float {_ARCH_NAMES.get(net.arch, net.arch)} x{net.width:g}"
    labels["FQ"] = f"{q.algorithm.upper()} w{q.bits.weights}a{q.bits.activations}, float fake-quantisation"
    if spec.verify.emulator == "board":
        labels["ARMCL"] = "generated ARM-CL C++, aarch64, on the board"
    return labels


def write_report(
    build_dir: Path,
    name: str,
    rows: list[dict[str, Any]],
    stages: Mapping[str, str],
    sections: Mapping[str, str] = {},
    labels: Mapping[str, str] = DESCRIPTIONS,
) -> None:
    """report.json and report.md in `build_dir`; `stages` maps each stage to its state; `sections`
    are further markdown sections (title -> body) placed after the ladder table; `labels` describe
    the rungs (`rung_labels`)."""
    atomic.write_json(build_dir / "report.json", {"name": name, "rows": rows, "stages": dict(stages)})
    atomic.write_text(build_dir / "report.md", render_markdown(name, rows, stages, sections, labels))


def render_markdown(
    name: str,
    rows: list[dict[str, Any]],
    stages: Mapping[str, str],
    sections: Mapping[str, str] = {},
    labels: Mapping[str, str] = DESCRIPTIONS,
) -> str:
    """report.md: the ladder table, its notes, the `sections` in order, then the stages' states."""
    lines = [
        f"# {name}: verification report",
        "",
        *ladder_table(rows, labels),
        "",
        "NME: mean 2D landmark error / sqrt(w*h) of the ground-truth 68-point box, %. " + images_note(rows),
        (
            "Against the rung above: integer rungs count the outputs that differ (mismatches); float rungs give "
            "the largest absolute difference of the normalised outputs (max abs diff). MEAN is a baseline, not a rung. "
            "TQ must equal FQI bit for bit. Every measurement of every row: `report.json`."
        ),
    ]
    for title, body in sections.items():
        lines += ["", f"## {title}", "", body.rstrip()]
    lines += ["", "## Stages", ""] + [f"- {stage}: {state}" for stage, state in stages.items()]
    return "\n".join(lines) + "\n"


def ladder_table(rows: list[dict[str, Any]], labels: Mapping[str, str] = DESCRIPTIONS) -> list[str]:
    """The README's table, one line per row: ``| RUNG (description) | NME % | against the rung above |``;
    NME with two decimals."""
    lines = ["| rung | NME % | against the rung above |", "|---|---|---|"]
    above = None
    for r in rows:
        rung = r["rung"]
        name = f"{rung} ({labels[rung]})" if labels.get(rung) else rung
        nme = "-" if r.get("nme") is None else f"{r['nme']:.2f}"
        cell = against(r, above)
        lines.append(f"| {name} | {nme} | {cell} |" if cell else f"| {name} | {nme} | |")
        above = rung
    return lines


def against(r: Mapping[str, Any], above: str | None) -> str:
    """The last cell of `ladder_table` for row `r` under rung `above`: ``N mismatches of M`` where both
    rungs are integer, else ``max abs diff X``, else empty; the compared rung is named when it is not
    `above` (ARMCL, CPU and BOARD are compared with GRAPH)."""
    ref = REFERENCE.get(r["rung"], above)
    if r.get("mismatches") is not None:
        text = f"{r['mismatches']:,} mismatches" + (f" of {r['outputs']:,}" if r.get("outputs") else "")
    elif r.get("max_abs_diff") is not None:
        text = f"max abs diff {r['max_abs_diff']:.3g}"
    else:
        return ""
    return text if ref == above else f"{text} against {ref}"


def images_note(rows: list[dict[str, Any]]) -> str:
    """Which rungs ran on how many validation images, as one sentence: ``Images: 1000 validation
    images for every rung.``, or the rungs grouped by count, ``Images: MEAN, FP 32; TQ, ONNX 16
    validation images (...)``, in the rows' order."""
    groups: dict[int, list[str]] = {}
    for r in rows:
        groups.setdefault(r["n"], []).append(r["rung"])
    if len(groups) == 1:
        return f"Images: {next(iter(groups))} validation images for every rung."
    return (
        "Images: "
        + "; ".join(f"{', '.join(rungs)} {n}" for n, rungs in groups.items())
        + " validation images (NMEs on different images are not comparable)."
    )


def graph_section(convert_dir: Path) -> str:
    """The convert stage's graph, from ``summary.json`` and ``graph/graph.json``: nodes, MACs, weights,
    constants, activation memory with and without the memory plan, per image, for the optimised
    graph (what the backends build), and the parsed graph's node count and memory in a sentence.
    Weights as `weight_count` counts them; all constants: ``summary.json``'s ``weight_bytes``."""
    summary = json.loads((convert_dir / "summary.json").read_text())
    g, p = summary["optimised"], summary["parsed"]
    count, nbytes = weight_count(json.loads((convert_dir / "graph" / "graph.json").read_text()))
    ops = ", ".join(f"{k} x{v}" for k, v in sorted(g["op_counts"].items()))
    io = "; ".join(f"{k} {v}" for k, v in {**g["inputs"], **g["outputs"]}.items())
    return "\n".join(
        [
            "The optimised qlspec graph (`convert/graph/`, what the backends build from), per image:",
            "",
            "| quantity | value |",
            "|---|---|",
            f"| nodes | {g['nodes']} ({ops}) |",
            f"| MACs | {g['macs']:,} |",
            f"| weights (Conv and Gemm kernels) | {count:,} values, {nbytes:,} bytes |",
            f"| all constants (weights, biases, requantiser multipliers and offsets) | {g['weight_bytes']:,} bytes |",
            f"| peak activation memory with the memory plan | {g['activation_bytes_planned']:,} bytes"
            + f" (lower bound {g['activation_bytes_lower_bound']:,}) |",
            f"| activation memory without reuse | {g['activation_bytes_naive']:,} bytes |",
            f"| input; output | {io} |",
            "",
            (
                f"As parsed from the ONNX file, before optimisation: {p['nodes']} nodes, peak activation memory "
                f"{p['activation_bytes_planned']:,} bytes with the memory plan ({p['activation_bytes_naive']:,} without reuse)."
            ),
            "",
        ]
    )


_KERNEL_OPS = {"Conv", "ConvRequant", "Gemm", "GemmRequant", "MatMul", "MatMulRequant"}


def weight_count(graph: Mapping[str, Any]) -> tuple[int, int]:
    """(values, bytes) of the kernels (input 1 of a `_KERNEL_OPS` node that is a constant) of a
    ``graph.json`` document; bytes: 1, 2, 4 or 8 per value, the smallest that holds the tensor's bits."""
    constants = {c["name"] for c in graph["constants"]}
    kernels = {n["inputs"][1] for n in graph["nodes"] if n["op"] in _KERNEL_OPS and n["inputs"][1] in constants}
    count = nbytes = 0
    for name in kernels:
        t = graph["tensors"][name]
        size = math.prod(t["shape"])
        count += size
        nbytes += size * next(b for b in (1, 2, 4, 8) if 8 * b >= t["bits"])
    return count, nbytes
