"""Real face data from a user-given folder: 300W-LP (training) and AFLW2000-3D (test), 3DDFA-cropped.

Both data sets are folders of 450x450 JPEG images, each with a same-name ``.mat`` (MATLAB v5, read
with ``scipy.io.loadmat``); sub-folders are searched (300W-LP keeps ``AFW/``, ``HELEN/``, ...,
``*_Flip/``; its ``landmarks/`` folder holds no images and is skipped by that rule). Images are read
with PIL and returned **BGR**. Files are taken in sorted relative-path order; ``limit`` keeps the
first ``limit`` of them.

**300W-LP** (`load_300wlp`): ``.mat`` keys ``Pose_Para`` (1x7: pitch, yaw, roll in radians, tx, ty,
tz, scale f), ``Shape_Para`` (199x1), ``Exp_Para`` (29x1), ``pt2d`` (2x68 image landmarks).

- Crop: `roi_from_landmarks` on ``pt2d``, rounded (`round_roi`), cut and resized to ``size``;
  landmarks = ``pt2d`` mapped into the crop with that ROI (`to_crop`), or, with
  ``landmarks="model"``, the user's BFM landmarks of the parameters below.
- Parameters (3DDFA's 62 = 12 pose + 40 shape + 10 expression): ``alpha_shp = Shape_Para[:40]``,
  ``alpha_exp = Exp_Para[:10]`` (3DDFA keeps the leading BFM/FaceWarehouse components of the 300W-LP
  fit). Pose: the fit maps a BFM vertex ``v`` to ``q = f * R @ v + t`` with
  ``R = Rx(pitch) @ Ry(yaw) @ Rz(roll)`` in the 3DDFA/face3d form (`rotation_3ddfa`) and ``t = (tx, ty,
  tz)``, in 3DDFA's image frame (x 1-based, ``y_up = H - y``, H the image height); this is the frame
  V2's ``similar_transform`` maps from, with ``size = H`` and the identity ROI. `pose_in_crop`
  rewrites ``[f R | t]`` so that the crop-frame output, sent through ``similar_transform`` with the
  crop's ROI, lands on the same image point: rows ``f R[i] / k_i`` with ``k_x = (ex - sx) / size``,
  ``k_y = (ey - sy) / size``, ``k_z = (k_x + k_y) / 2``, and offsets ``t_x' = (t_x - 1 - sx) / k_x + 1``,
  ``t_y' = size - (H - t_y - sy) / k_y``, ``t_z' = (t_z - 1) / k_z + 1``.
- Limits: (1) the result is exact only if the user's BFM has the 300W-LP fit's mean shape and
  bases (3DDFA's ``bfm_noneck_v3`` is cut from the same BFM + expression model; its ``u`` is
  ``mu_shape + mu_exp``); truncating 199/29 coefficients to 40/10 drops the fit's fine detail, so
  model landmarks and ``pt2d`` differ by a few pixels on real faces. (2) The 1-pixel conventions of
  the MATLAB fitting code are not published; third-party ports disagree (``H - y`` versus
  ``H - y - 1``). This loader uses V2's ``similar_transform`` rule throughout, so parameters, crop
  and landmarks agree with each other; against the original fit they may be offset by up to one
  image pixel (about a quarter of a crop pixel). (3) 3DDFA's own training crops
  (``train_aug_120x120``) also carry random perturbations; this loader does not augment.
- Yaw: ``degrees(Pose_Para[1])`` as stored (the fitted yaw; it equals 3DDFA's ``asin(R[2, 0])`` when
  pitch and roll are zero).

**AFLW2000-3D** (`load_aflw2000`): ``.mat`` keys ``pt3d_68`` (3x68 image landmarks; x, y rows used)
and ``Pose_Para``. Crop as 3DDFA's benchmark (``benchmarkCrop.m``): `roi_from_landmarks` on the GT
68 points, rounded. Landmarks = GT mapped into the crop (NME is unchanged by this uniform scale and
shift, up to the <1 % aspect change of a rounded ROI). Yaw: ``degrees(Pose_Para[1])`` as stored,
as 3DDFA's ``AFLW2000-3D.pose.npy`` (it spans -351..188 degrees through angle wrap-around, and the
benchmark bins ``abs()`` of it unchanged; so does this loader). Parameters: computed as for 300W-LP
when the file also holds ``Shape_Para`` and ``Exp_Para`` (AFLW2000-3D's files do), else **NaN**
(test-only data: nothing may train on them; `FaceSet` accepts NaN).

Landmark files are taken as stored: 3DDFA's benchmark compares its 0-based predictions against
them with no shift, so they are treated as 0-based image pixels, y down.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from qlspec.data.crop import CROP_SIZE, crop_image, roi_from_landmarks, round_roi, to_crop
from qlspec.data.faceset import FaceSet
from qlspec.errors import QlspecError
from qlspec.face.morphable import NUM_EXPRESSION, NUM_LANDMARKS, NUM_PARAMS, NUM_SHAPE, FaceModel

__all__ = [
    "RealFaces",
    "load_300wlp",
    "load_aflw2000",
    "pose_in_crop",
    "read_300wlp",
    "read_aflw2000",
    "rotation_3ddfa",
]

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True, eq=False)
class RealFaces:
    """A loaded real data set: the `FaceSet`, the rounded crop ROIs and the source images.

    ``rois``: float64 ``(N, 4)`` ``[sx, sy, ex, ey]`` (integers) in original-image pixels, to map
    crop-frame predictions back with `qlspec.data.crop.from_crop` as 3DDFA's benchmark does.
    ``names``: each image's path relative to the root, POSIX style.
    """

    faces: FaceSet
    rois: np.ndarray
    names: tuple[str, ...]


def rotation_3ddfa(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """Angles in radians -> ``(3, 3)`` float64 ``Rx(pitch) @ Ry(yaw) @ Rz(roll)`` of 300W-LP's fit.

    ``Rx = [[1, 0, 0], [0, c, s], [0, -s, c]]``, ``Ry = [[c, 0, -s], [0, 1, 0], [s, 0, c]]``,
    ``Rz = [[c, s, 0], [-s, c, 0], [0, 0, 1]]`` (face3d ``angle2matrix_3ddfa``, "the same as in 3DDFA"),
    applied as ``q = f * R @ v + t``.
    """
    cx, sx = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(yaw), np.sin(yaw)
    cz, sz = np.cos(roll), np.sin(roll)
    rx = np.array([[1, 0, 0], [0, cx, sx], [0, -sx, cx]])
    ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
    rz = np.array([[cz, sz, 0], [-sz, cz, 0], [0, 0, 1]])
    return rx @ ry @ rz


def pose_in_crop(pose_para: np.ndarray, roi: np.ndarray, image_height: int, size: int = CROP_SIZE) -> np.ndarray:
    """300W-LP ``Pose_Para`` (7: pitch, yaw, roll [rad], tx, ty, tz, f) -> ``(3, 4)`` float64 crop-frame ``P``.

    ``P = [f R | t]`` in 3DDFA's image frame (x 1-based, y up from the bottom, module docstring),
    rewritten for the ``size`` crop cut at `roi` so that V2's ``similar_transform(P @ [v; 1], roi,
    size)`` equals the image point ``(q_x - 1, H - q_y)`` of ``q = f R v + t`` for every ``v``.
    """
    pitch, yaw, roll, tx, ty, tz, f = (float(v) for v in np.asarray(pose_para, np.float64).reshape(-1)[:7])
    sx, sy, ex, ey = (float(v) for v in np.asarray(roi, np.float64)[:4])
    kx, ky = (ex - sx) / size, (ey - sy) / size
    kz = (kx + ky) / 2
    rot = f * rotation_3ddfa(pitch, yaw, roll)
    p = np.empty((3, 4))
    p[0, :3], p[0, 3] = rot[0] / kx, (tx - 1 - sx) / kx + 1
    p[1, :3], p[1, 3] = rot[1] / ky, size - (image_height - ty - sy) / ky
    p[2, :3], p[2, 3] = rot[2] / kz, (tz - 1) / kz + 1
    return p


def _images(root: Path) -> list[Path]:
    if not root.is_dir():
        raise QlspecError("data folder not found", where=str(root))
    found = sorted(
        (p for p in root.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file()),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not found:
        raise QlspecError(f"no images ({', '.join('*' + s for s in _IMAGE_SUFFIXES)}) found", where=str(root))
    return found


def read_bgr(path: Path) -> np.ndarray:
    """A photo as uint8 BGR ``(H, W, 3)``, decoded by Pillow (``convert("RGB")``: alpha dropped, 16-bit
    samples to their high byte); an unreadable file is a located `QlspecError`.

    One exception to Pillow: a 16-bit grey PNG (Pillow's mode ``I;16``) keeps its high byte here,
    as 16-bit colour does in Pillow and every 16-bit sample does in the C++ app (libpng's
    ``png_set_strip_16``); Pillow's own conversion clips it at 255 instead, so that 256 and 65535
    both become white."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.format == "PNG" and im.mode in ("I;16", "I;16B", "I;16L", "I"):
                grey = (np.asarray(im, np.uint32) >> 8).astype(np.uint8)
                rgb = np.repeat(grey[:, :, None], 3, axis=2)
            else:
                rgb = np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as e:
        raise QlspecError(f"cannot read image: {e}", where=str(path)) from None
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _read_mat(image: Path) -> tuple[Path, dict[str, np.ndarray]]:
    import scipy.io

    mat = image.with_suffix(".mat")
    if not mat.is_file():
        raise QlspecError(f"no {mat.name} beside the image", where=str(image))
    try:
        return mat, scipy.io.loadmat(str(mat))
    except Exception as e:  # scipy raises ValueError, TypeError, MatReadError... on a bad file
        raise QlspecError(f"cannot read .mat file: {e}", where=str(mat)) from None


def _key(mat: Path, data: dict[str, np.ndarray], key: str, shape: tuple[int, ...], *, at_least: bool = False) -> np.ndarray:
    """``data[key]`` as float64 of `shape` (1-D shapes accept any layout of that many values)."""
    if key not in data:
        raise QlspecError(f"missing key {key!r}", where=str(mat))
    try:
        arr = np.asarray(data[key], np.float64)
    except (TypeError, ValueError):
        raise QlspecError(f"key {key!r}: not numeric", where=str(mat)) from None
    if len(shape) == 1:
        arr = arr.reshape(-1)
        ok = arr.size >= shape[0] if at_least else arr.size == shape[0]
    else:
        ok = arr.shape == shape
    if not ok:
        want = f"at least {shape[0]} values" if at_least else f"shape {shape}"
        raise QlspecError(f"key {key!r}: expected {want}, got {np.shape(data[key])}", where=str(mat))
    return arr


def _params(mat: Path, data: dict[str, np.ndarray], roi: np.ndarray, height: int, size: int) -> np.ndarray:
    pose = _key(mat, data, "Pose_Para", (7,), at_least=True)
    shp = _key(mat, data, "Shape_Para", (NUM_SHAPE,), at_least=True)
    exp = _key(mat, data, "Exp_Para", (NUM_EXPRESSION,), at_least=True)
    return np.concatenate([pose_in_crop(pose, roi, height, size).reshape(-1), shp[:NUM_SHAPE], exp[:NUM_EXPRESSION]])


_Sample = tuple[Path, str, np.ndarray, Path, dict[str, np.ndarray]]  # image, name, BGR pixels, .mat path, .mat data


def _samples(root: str | os.PathLike[str], limit: int | None) -> Iterator[_Sample]:
    root = Path(root)
    paths = _images(root)
    if limit is not None:
        if limit < 1:
            raise QlspecError(f"limit must be >= 1, got {limit}", where=str(root))
        paths = paths[:limit]
    for path in paths:
        mat, data = _read_mat(path)
        yield path, path.relative_to(root).as_posix(), read_bgr(path), mat, data


def _assemble(
    images: list[np.ndarray], params: list[np.ndarray], lmk: list[np.ndarray], yaw: list[float], rois: list[np.ndarray], names: list[str]
) -> RealFaces:
    faces = FaceSet(
        images=np.stack(images),
        params=np.asarray(params, np.float32).reshape(-1, NUM_PARAMS),
        landmarks=np.asarray(lmk, np.float32).reshape(-1, 2, NUM_LANDMARKS),
        yaw_deg=np.asarray(yaw, np.float32),
    )
    return RealFaces(faces=faces, rois=np.asarray(rois, np.float64).reshape(-1, 4), names=tuple(names))


def read_300wlp(
    root: str | os.PathLike[str],
    *,
    bfm_basis: FaceModel | None = None,
    limit: int | None = None,
    size: int = CROP_SIZE,
    landmarks: Literal["pt2d", "model"] = "pt2d",
) -> RealFaces:
    """300W-LP under `root` -> `RealFaces` (see the module docstring for every convention and limit).

    Args:
        root: the 300W-LP folder (images with same-name ``.mat`` files, sub-folders searched).
        bfm_basis: the user's basis (`qlspec.face.bfm.load_bfm`); needed only for ``landmarks="model"``.
        limit: keep the first `limit` images (sorted relative paths); None keeps all.
        size: crop side in pixels (3DDFA: 120).
        landmarks: ``"pt2d"``: the annotated 2D landmarks mapped into the crop; ``"model"``: the
            basis's 68 landmarks of each face's 62 parameters (consistent with the parameters by
            construction, so a landmark loss and the parameter loss agree).
    """
    if landmarks not in ("pt2d", "model"):
        raise QlspecError(f"landmarks must be 'pt2d' or 'model', got {landmarks!r}", where="load_300wlp")
    if landmarks == "model" and bfm_basis is None:
        raise QlspecError("landmarks='model' needs the user's BFM basis (bfm_basis)", where="load_300wlp")
    images, params, lmk, yaw, rois, names = [], [], [], [], [], []
    for _path, name, bgr, mat, data in _samples(root, limit):
        pt2d = _key(mat, data, "pt2d", (2, NUM_LANDMARKS))
        roi = round_roi(roi_from_landmarks(pt2d))
        p = _params(mat, data, roi, bgr.shape[0], size)
        images.append(crop_image(bgr, roi, size))
        params.append(p)
        lmk.append(to_crop(pt2d, roi, size))
        yaw.append(np.degrees(_key(mat, data, "Pose_Para", (7,), at_least=True)[1]))
        rois.append(roi)
        names.append(name)
    if landmarks == "model" and bfm_basis is not None:  # None was refused above
        lmk = list(bfm_basis.landmarks(np.asarray(params, np.float64))[:, :2])
    return _assemble(images, params, lmk, yaw, rois, names)


def read_aflw2000(
    root: str | os.PathLike[str],
    *,
    limit: int | None = None,
    size: int = CROP_SIZE,
) -> RealFaces:
    """AFLW2000-3D under `root` -> `RealFaces` (benchmark crop from GT landmarks; module docstring).

    Parameters are NaN for files without ``Shape_Para``/``Exp_Para`` (test-only data).
    """
    images, params, lmk, yaw, rois, names = [], [], [], [], [], []
    for _path, name, bgr, mat, data in _samples(root, limit):
        pts = _key(mat, data, "pt3d_68", (3, NUM_LANDMARKS))[:2]
        pose = _key(mat, data, "Pose_Para", (7,), at_least=True)
        roi = round_roi(roi_from_landmarks(pts))
        if "Shape_Para" in data and "Exp_Para" in data:
            params.append(_params(mat, data, roi, bgr.shape[0], size))
        else:
            params.append(np.full(NUM_PARAMS, np.nan))
        images.append(crop_image(bgr, roi, size))
        lmk.append(to_crop(pts, roi, size))
        yaw.append(np.degrees(pose[1]))
        rois.append(roi)
        names.append(name)
    return _assemble(images, params, lmk, yaw, rois, names)


def load_300wlp(
    root: str | os.PathLike[str],
    *,
    bfm_basis: FaceModel | None = None,
    limit: int | None = None,
    size: int = CROP_SIZE,
    landmarks: Literal["pt2d", "model"] = "pt2d",
) -> FaceSet:
    """`read_300wlp(...)`'s `FaceSet` only."""
    return read_300wlp(root, bfm_basis=bfm_basis, limit=limit, size=size, landmarks=landmarks).faces


def load_aflw2000(root: str | os.PathLike[str], *, limit: int | None = None, size: int = CROP_SIZE) -> FaceSet:
    """`read_aflw2000(...)`'s `FaceSet` only."""
    return read_aflw2000(root, limit=limit, size=size).faces
