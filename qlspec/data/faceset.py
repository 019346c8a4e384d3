"""`FaceSet`: cropped face images with their 3DMM parameters, 68 landmarks and yaw, kept in memory.

Conventions (shared by the synthetic generator, the real-data loaders and the NME metric):

- ``images``: uint8 ``(N, S, S, 3)``, **BGR** channel order (as ``cv2.imread`` gives and 3DDFA trains
  on), S = 120 for 3DDFA.
- ``params``: float32 ``(N, 62)``, de-normalised 3DMM parameters (layout in `qlspec.face.morphable`).
- ``landmarks``: float32 ``(N, 2, 68)``, rows x and y of the 68 iBUG points in crop pixel
  coordinates: 0-based, pixel centres at integer coordinates ((0, 0) is the centre of the top-left
  pixel), x to the right, y **down**. Points hidden by self-occlusion keep their 3D-projected position.
- ``yaw_deg``: float32 ``(N,)``, head yaw in degrees (3DDFA's ``asin(R[2, 0])``); NME bins on ``|yaw|``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from qlspec import atomic
from qlspec.data.disk_images import DiskImages

__all__ = ["FaceSet", "Images"]

Images = np.ndarray | DiskImages  # a split's images: in memory, or read from the file where indexed


@dataclass(frozen=True, eq=False)
class FaceSet:
    """Images, parameters, landmarks and yaw of N faces (see module docstring for units)."""

    images: Images
    params: np.ndarray
    landmarks: np.ndarray
    yaw_deg: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (N, S, S, 3), got {self.images.dtype} {self.images.shape}")
        checks = (
            ("params", self.params, (n, 62)),
            ("landmarks", self.landmarks, (n, 2, 68)),
            ("yaw_deg", self.yaw_deg, (n,)),
        )
        for name, arr, shape in checks:
            if arr.shape != shape or arr.dtype != np.float32:
                raise ValueError(f"{name} must be float32 {shape}, got {arr.dtype} {arr.shape}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        """Crop side in pixels."""
        return int(self.images.shape[1])

    def subset(self, index: slice | np.ndarray) -> FaceSet:
        """The faces at `index` (a slice or an integer/boolean array), as a new `FaceSet`."""
        return FaceSet(self.images[index], self.params[index], self.landmarks[index], self.yaw_deg[index])

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write one uncompressed .npz (keys images, params, landmarks, yaw_deg), atomically."""
        atomic.save_npz(path, images=self.images, params=self.params, landmarks=self.landmarks, yaw_deg=self.yaw_deg)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, images_on_disk: bool = False) -> FaceSet:
        """Read a file written by `save`; with `images_on_disk`, all but the images, which stay in the
        file and are read where they are indexed (`DiskImages`: training reads a batch at a time)."""
        with np.load(path) as z:
            images = DiskImages(path) if images_on_disk else z["images"]
            return cls(images, z["params"], z["landmarks"], z["yaw_deg"])
