"""Keep the face model a data stage used beside its images, so every later rung decodes alike.

Synthetic data needs nothing stored (`synthetic_face_model()` is deterministic). Real data stores the
68-point rows of the user's own basis in the user's build folder as face_model.npz.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, cast

import numpy as np

from qlspec.face.morphable import FaceModel, synthetic_face_model

FILE = "face_model.npz"


def save_face_model(model: FaceModel, folder: Path) -> None:
    np.savez(
        folder / FILE,
        u=model.u,
        w_shp=model.w_shp,
        w_exp=model.w_exp,
        keypoints=model.keypoints,
        frame=np.array(model.frame),
        size=np.array(model.size),
    )


def load_face_model(folder: Path) -> FaceModel:
    """The face model of the data stage at `folder`: stored, or the synthetic one."""
    path = folder / FILE
    if not path.is_file():
        return synthetic_face_model()
    with np.load(path) as f:
        frame = cast(Literal["pixel", "3ddfa"], str(f["frame"]))  # as save_face_model wrote it, from a FaceModel
        return FaceModel(f["u"], f["w_shp"], f["w_exp"], f["keypoints"], frame=frame, size=int(f["size"]))
