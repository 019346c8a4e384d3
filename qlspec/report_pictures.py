"""Pictures for report.md: landmarks one rung per panel, NME per yaw bin (and each rung's difference
from FP), and the per-bin table.

Each rung's predictions are decoded again from the outputs its stage stored (normalised network
outputs for FP, FQ and FQI, integer outputs times the output eps for TQ, ONNX and GRAPH), on the
first validation images that every rung saw.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from qlspec.evaluation import landmarks_from_outputs, load_split, load_stats
from qlspec.face.store import load_face_model
from qlspec.plots import landmark_overlays, nme_by_yaw_chart

OVERLAY_IMAGES = 4  # rows of the landmark picture, one face each


def rung_outputs(build_dir: Path, current: set[str]) -> dict[str, np.ndarray]:
    """Normalised outputs ``(n, 62)`` of each rung whose stage is up to date. Once the export is up to
    date, every integer rung (FQI, TQ, ONNX, GRAPH) is its integer outputs times the export's output
    eps, in float64, so rungs with equal integers have exactly equal outputs."""
    out: dict[str, np.ndarray] = {}
    eps = None
    if "export" in current:
        eps = np.asarray(json.loads((build_dir / "export" / "export.json").read_text())["output_eps"], np.float64)
    if "train" in current:
        out["FP"] = np.load(build_dir / "train" / "outputs.npz")["z"]
    if "quantise" in current:
        out["FQ"] = np.load(build_dir / "quantise" / "outputs.npz")["z"]
        with np.load(build_dir / "quantise" / "fqi_outputs.npz") as f:
            out["FQI"] = f["z"] if eps is None else f["output"] * eps
    if eps is not None:
        out["TQ"] = np.load(build_dir / "export" / "tq_outputs.npz")["output"] * eps
    if "convert" in current and eps is not None:
        with np.load(build_dir / "convert" / "outputs.npz") as f:
            out.update({rung.upper(): f[rung] * eps for rung in f.files})
    return out


def pictures(build_dir: Path, rows: list[dict[str, Any]], current: set[str]) -> Mapping[str, str]:
    """Write the PNGs next to report.md and return the markdown sections that show them."""
    sections: dict[str, str] = {}
    binned = [r for r in rows if r.get("by_yaw")]
    if binned:
        sections["NME per yaw bin (%)"] = yaw_section(build_dir, binned)
    outputs = rung_outputs(build_dir, current) if "data" in current else {}
    if outputs:
        sections["Landmarks"] = landmark_section(build_dir, outputs)
    return sections


def yaw_section(build_dir: Path, binned: list[dict[str, Any]]) -> str:
    """The NME-per-yaw-bin table of every row in `binned` (rows with ``by_yaw``), and nme_by_yaw.png
    for the rows `chart_rows` picks."""
    labels = [k for k in binned[0]["by_yaw"] if k != "mean of bins"]
    lines = [
        "| rung | n | " + " | ".join(f"\\|yaw\\| {b}" for b in labels) + " | mean of bins | all |",
        "|---|---|" + "---|" * (len(labels) + 2),
    ]
    for r in binned:
        cells = [_pct(r["by_yaw"].get(b)) for b in labels + ["mean of bins"]]
        lines.append(f"| {r['rung']} | {r['n']} | " + " | ".join(cells) + f" | {_pct(r['nme'])} |")
    charted = chart_rows(binned)
    chart = {r["rung"]: {b: (v / 100 if v is not None else float("nan")) for b, v in r["by_yaw"].items()} for r in charted}
    nme_by_yaw_chart(chart, build_dir / "nme_by_yaw.png")
    left_out = [r["rung"] for r in binned if r not in charted]
    caption = (
        f"The chart: NME per bin (left) and each rung minus {charted[0]['rung']} (right, percentage points); "
        "rungs with equal values share a line"
        + (f"; {', '.join(left_out)} in the table only (another predictor or other images)" if left_out else "")
        + "."
    )
    return "\n".join(lines) + f"\n\n{caption}\n\n![NME per yaw bin](nme_by_yaw.png)\n"


def landmark_section(build_dir: Path, outputs: Mapping[str, np.ndarray]) -> str:
    """landmarks.png from each rung's `outputs` (`rung_outputs`) on the first `OVERLAY_IMAGES`
    validation images, and the text that shows it."""
    n = min(OVERLAY_IMAGES, *(len(z) for z in outputs.values()))
    faces = load_split(build_dir / "data", "val").subset(slice(0, n))
    stats, model = load_stats(build_dir / "data"), load_face_model(build_dir / "data")
    preds = {rung: landmarks_from_outputs(z[:n], stats, model) for rung, z in outputs.items()}
    landmark_overlays(np.asarray(faces.images), faces.landmarks, preds, build_dir / "landmarks.png", n=n)
    return (
        f"One column per rung (rungs with identical landmarks share one), one row per image (the first {n} "
        f"validation images): the rung's 68 landmarks (crosses) over the ground truth (green dots), and their mean "
        f"distance from it in pixels.\n\n![landmark overlays](landmarks.png)\n"
    )


def chart_rows(binned: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows the yaw chart compares: every rung but MEAN (a baseline, not a rung) that was measured
    on as many images as the first of them (FP), so that differences come from the rung, not the
    images. In ladder order."""
    rungs = [r for r in binned if r["rung"] != "MEAN"] or binned
    return [r for r in rungs if r["n"] == rungs[0]["n"]]


def _pct(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"
