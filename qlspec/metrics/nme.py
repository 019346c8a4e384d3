"""Normalised mean error (NME) of 68 facial landmarks, as the 3DDFA benchmarks define it.

Per image (cleardusk/3DDFA ``benchmark_aflw2000.py``)::

    nme = mean_k ||pred[:, k] - gt[:, k]||_2 / sqrt((max_x - min_x) * (max_y - min_y))

over the 68 points, 2D only, where the box is the ground-truth 68-point bounding box. NME values
here are fractions; multiply by 100 for the percentages that papers print (3DDFA_V2 mb1: 3.51).

Yaw bins on ``|yaw|`` in degrees: ``[0, 30]``, ``(30, 60]``, ``(60, inf)`` (3DDFA labels the last one
[60, 90]). ``mean_of_bins`` is 3DDFA's reported "Mean": the mean of the non-empty bins' mean NMEs;
``mean`` is the plain mean over all images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from qlspec.face.morphable import FaceModel

__all__ = ["YAW_BINS", "BinNME", "NMEReport", "mean_predictor_nme", "nme_per_image", "nme_report"]

#: (label, low exclusive except for the first bin, high inclusive) in degrees of |yaw|.
YAW_BINS: tuple[tuple[str, float, float], ...] = (("[0,30]", 0.0, 30.0), ("(30,60]", 30.0, 60.0), (">60", 60.0, np.inf))


def nme_per_image(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``(N, >=2, 68)`` predicted and ground-truth points (x, y rows; extra rows ignored) -> ``(N,)`` NME."""
    pred, gt = np.asarray(pred, np.float64)[:, :2], np.asarray(gt, np.float64)[:, :2]
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ")
    span = gt.max(2) - gt.min(2)  # (N, 2): box width and height
    norm = np.sqrt(span[:, 0] * span[:, 1])
    return np.linalg.norm(pred - gt, axis=1).mean(1) / norm


@dataclass(frozen=True)
class BinNME:
    """One yaw bin: label, |yaw| limits in degrees, image count and mean NME (nan when empty)."""

    label: str
    low: float
    high: float
    n: int
    nme: float


@dataclass(frozen=True)
class NMEReport:
    """Per-image NME (``per_image``, fractions) with its yaw-bin summary."""

    per_image: np.ndarray
    bins: tuple[BinNME, ...]
    mean_of_bins: float
    mean: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no per-image values)."""
        return {
            "nme": self.mean,
            "nme_mean_of_bins": self.mean_of_bins,
            "n": len(self.per_image),
            "bins": [{"yaw": b.label, "n": b.n, "nme": b.nme} for b in self.bins],
        }


def nme_report(pred: np.ndarray, gt: np.ndarray, yaw_deg: np.ndarray) -> NMEReport:
    """NME of `pred` against `gt` (each ``(N, >=2, 68)``), binned on ``|yaw_deg|`` ``(N,)``."""
    per_image = nme_per_image(pred, gt)
    yaw = np.abs(np.asarray(yaw_deg, np.float64))
    bins = []
    for i, (label, lo, hi) in enumerate(YAW_BINS):
        sel = (yaw >= lo if i == 0 else yaw > lo) & (yaw <= hi)
        n = int(sel.sum())
        bins.append(BinNME(label, lo, hi, n, float(per_image[sel].mean()) if n else float("nan")))
    filled = [b.nme for b in bins if b.n]
    return NMEReport(
        per_image=per_image,
        bins=tuple(bins),
        mean_of_bins=float(np.mean(filled)) if filled else float("nan"),
        mean=float(per_image.mean()) if len(per_image) else float("nan"),
    )


def mean_predictor_nme(mean_params: np.ndarray, gt: np.ndarray, yaw_deg: np.ndarray, face_model: FaceModel) -> NMEReport:
    """NME of the trivial predictor that outputs `mean_params` ``(62,)`` for every image.

    Use the training set's parameter mean (`ParamStats.mean`): it is what a network whose
    normalised output is always zero would predict.
    """
    pts = face_model.landmarks(np.asarray(mean_params, np.float64)[None])[:, :2]
    return nme_report(np.broadcast_to(pts, (len(gt), 2, pts.shape[-1])), gt, yaw_deg)
