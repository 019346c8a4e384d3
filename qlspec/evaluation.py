"""What every rung of the ladder is measured with: network outputs -> landmarks -> NME row.

All rungs are evaluated on the same validation images: the first `verify.samples` of the `val`
split for the integer rungs, the whole split for FP and FQ (both are reported with their `n`).
NME is reported in percent.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from qlspec.data.faceset import FaceSet
from qlspec.face.morphable import FaceModel, synthetic_face_model
from qlspec.face.params import ParamStats
from qlspec.metrics.nme import NMEReport, nme_report
from qlspec.preprocess import InputTransform
from qlspec.report import row

if TYPE_CHECKING:
    from qlspec.export.f2t import Integerised
    from qlspec.spec.models import AppSpec


def load_split(data_dir: Path, split: str) -> FaceSet:
    """The `split` ('train' or 'val') written by the data stage. The training split's images stay in
    the file and are read a batch at a time (`DiskImages`): 518 MB of the default app's memory."""
    return FaceSet.load(data_dir / f"{split}.npz", images_on_disk=split == "train")


def load_stats(data_dir: Path) -> ParamStats:
    return ParamStats.load(data_dir / "param_stats.npz")


def landmarks_from_outputs(z: np.ndarray, stats: ParamStats, face_model: FaceModel | None = None) -> np.ndarray:
    """Normalised network outputs ``(N, 62)`` -> landmarks ``(N, 2, 68)`` in crop pixels."""
    params = stats.denormalise(np.asarray(z, np.float64))
    return (face_model or synthetic_face_model()).landmarks(params)[:, :2].astype(np.float32)


@torch.no_grad()
def network_outputs(net: torch.nn.Module, faces: FaceSet, transform: InputTransform, batch_size: int = 256) -> np.ndarray:
    """The network's raw (normalised) outputs ``(N, 62)`` float32 on `faces` (inputs by `transform`), in eval mode."""
    net.eval()
    outs = [net(transform(faces.images[s : s + batch_size])).float().numpy() for s in range(0, len(faces), batch_size)]
    return np.concatenate(outs).astype(np.float32)


def nme_row(rung: str, landmarks: np.ndarray, faces: FaceSet, **extra: Any) -> dict[str, Any]:
    """A report row for `rung` whose predictions are `landmarks` on `faces` (NME in %, per yaw bin)."""
    return rung_row(rung, nme_report(landmarks, faces.landmarks, faces.yaw_deg), **extra)


def rung_row(rung: str, report: NMEReport, **extra: Any) -> dict[str, Any]:
    """A report row from an NME report (NME in %, per yaw bin)."""
    return row(rung, nme=round(100 * report.mean, 4), n=len(report.per_image), by_yaw=yaw_bins_percent(report), **extra)


def yaw_bins_percent(report: NMEReport) -> dict[str, float | None]:
    bins = {b.label: (None if b.n == 0 else round(100 * b.nme, 4)) for b in report.bins}
    bins["mean of bins"] = round(100 * report.mean_of_bins, 4)
    return bins


def fitting_images(spec: AppSpec, train: FaceSet, val: FaceSet) -> torch.Tensor:
    """The images F2T fits each requantiser's D on: the first ``quantisation.ptq.samples`` images of
    the training split (the calibration set) and the first ``verify.samples`` of the validation split,
    pre-processed. Every stage that integerises uses these, so they all get the same constants."""
    prep = InputTransform.from_spec(spec.preprocess)
    images = np.concatenate([train.images[: spec.quantisation.ptq.samples], val.images[: spec.verify.samples]])
    return prep(images)


def integerise(fq: torch.nn.Module, spec: AppSpec, train: FaceSet, val: FaceSet) -> Integerised:
    """F2T of the fake-quantised `fq` as the spec asks (`export.requant_bits`, `export.headroom`),
    D fitted on `fitting_images` of the data stage's splits: the one call the quantise stage (rung
    FQI) and the export stage (rung TQ and the files) share."""
    from qlspec.export import fake_to_true

    x = fitting_images(spec, train, val)
    return fake_to_true(fq, input_shape=(1, *x.shape[1:]), requant_bits=spec.export.requant_bits, samples=x, headroom=spec.export.headroom)


def integer_outputs(net: Integerised, faces: FaceSet, transform: InputTransform, batch_size: int = 64) -> np.ndarray:
    """Rung FQI: the integer outputs (int64) of F2T's graph on `faces`, by the torch executor."""
    return np.concatenate(
        [net.run(transform(faces.images[s : s + batch_size]), engine="torch", batch=batch_size) for s in range(0, len(faces), batch_size)]
    )
