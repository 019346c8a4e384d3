"""Pictures for report.md: landmark overlays per rung, NME per yaw bin, and the per-bin table.

Each rung's predictions are decoded again from the outputs its stage stored (normalised network
outputs for FP and FQ, integer outputs times the output eps for TQ, ONNX and GRAPH), on the first
validation images that every rung saw.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from qlspec.evaluation import landmarks_from_outputs, load_split, load_stats
from qlspec.face.store import load_face_model
from qlspec.plots import landmark_overlays, nme_by_yaw_chart

OVERLAY_IMAGES = 8


def rung_outputs(build_dir: Path, current: set[str]) -> dict[str, np.ndarray]:
    """Normalised outputs ``(n, 62)`` of each rung whose stage is up to date."""
    out: dict[str, np.ndarray] = {}
    if "train" in current:
        out["FP"] = np.load(build_dir / "train" / "outputs.npz")["z"]
    if "quantise" in current:
        out["FQ"] = np.load(build_dir / "quantise" / "outputs.npz")["z"]
    if "export" in current:
        out["TQ"] = np.load(build_dir / "export" / "tq_outputs.npz")["z"]
    if "convert" in current and "export" in current:
        meta = json.loads((build_dir / "export" / "deeploy" / "metadata.json").read_text())
        eps = np.asarray(meta["output"]["eps"], np.float64)
        with np.load(build_dir / "convert" / "outputs.npz") as f:
            out.update({rung.upper(): f[rung] * eps for rung in f.files})
    return out


def pictures(build_dir: Path, rows: list[dict[str, Any]], current: set[str]) -> Mapping[str, str]:
    """Write the PNGs next to report.md and return the markdown sections that show them."""
    sections: dict[str, str] = {}
    binned = [r for r in rows if r.get("by_yaw")]
    if binned:
        labels = [k for k in binned[0]["by_yaw"] if k != "mean of bins"]
        lines = ["| rung | n | " + " | ".join(f"\\|yaw\\| {b}" for b in labels) + " | mean of bins | all |",
                 "|---|---|" + "---|" * (len(labels) + 2)]
        for r in binned:
            cells = [_pct(r["by_yaw"].get(b)) for b in labels + ["mean of bins"]]
            lines.append(f"| {r['rung']} | {r['n']} | " + " | ".join(cells) + f" | {_pct(r['nme'])} |")
        chart = {r["rung"]: {b: (v / 100 if v is not None else float("nan")) for b, v in r["by_yaw"].items()} for r in binned}
        nme_by_yaw_chart(chart, build_dir / "nme_by_yaw.png")
        sections["NME per yaw bin (%)"] = "\n".join(lines) + "\n\n![NME per yaw bin](nme_by_yaw.png)\n"
    if "data" in current:
        outputs = rung_outputs(build_dir, current)
        if outputs:
            n = min(OVERLAY_IMAGES, *(len(z) for z in outputs.values()))
            faces = load_split(build_dir / "data", "val").subset(slice(0, n))
            stats, model = load_stats(build_dir / "data"), load_face_model(build_dir / "data")
            preds = {rung: landmarks_from_outputs(z[:n], stats, model) for rung, z in outputs.items()}
            landmark_overlays(faces.images, faces.landmarks, preds, build_dir / "landmarks.png", n=n)
            sections["Landmarks"] = ("Ground truth (green) and each rung's 68 landmarks on the first validation "
                                     "images.\n\n![landmark overlays](landmarks.png)\n")
    return sections


def _pct(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.2f}"
