"""Tiny files in the exact on-disk formats of 300W-LP, AFLW2000-3D and 3DDFA's BFM files.

Random arrays of the right shapes, written with scipy.io.savemat, PIL, pickle and numpy: no real
data, nothing BFM-derived. The fake basis is face-sized (about +-70 model units) so that a pose
with scale ~0.6 puts the 68 points inside a 160 x 180 image.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

H, W = 180, 160  # fake image height and width (non-square on purpose)


def fake_basis(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``u`` (204,), ``w_shp`` (204, 40), ``w_exp`` (204, 10): 68 points x (x, y, z) interleaved."""
    rng = np.random.default_rng(seed)
    pts = np.stack([rng.uniform(-70, 70, 68), rng.uniform(-80, 70, 68), rng.uniform(-30, 30, 68)], 1)
    u = pts.reshape(-1)
    w_shp = rng.normal(0, 1e-5, (204, 40))  # BFM-like: tiny basis, huge coefficients
    w_exp = rng.normal(0, 1.0, (204, 10))
    return u, w_shp, w_exp


def write_text_basis(folder: Path, seed: int = 0) -> Path:
    u, w_shp, w_exp = fake_basis(seed)
    folder.mkdir(parents=True, exist_ok=True)
    np.savetxt(folder / "u_base.txt", u)
    np.savetxt(folder / "w_shp_base.txt", w_shp)
    np.savetxt(folder / "w_exp_base.txt", w_exp)
    return folder


def write_bfm_pkl(path: Path, seed: int = 0, *, vertices: int = 150, protocol: int = 4, drop: str | None = None) -> Path:
    """A bfm_noneck_v3.pkl look-alike whose keypoint rows hold `fake_basis(seed)`, extra columns and vertices."""
    rng = np.random.default_rng(seed + 100)
    u68, w_shp68, w_exp68 = fake_basis(seed)
    ids = rng.choice(vertices, 68, replace=False)
    keypoints = (3 * ids[:, None] + np.arange(3)[None, :]).reshape(-1).astype(np.int64)
    u = rng.normal(0, 50, (3 * vertices, 1)).astype(np.float32)
    w_shp = rng.normal(0, 1e-5, (3 * vertices, 45)).astype(np.float32)  # >= 40 columns: first 40 kept
    w_exp = rng.normal(0, 1, (3 * vertices, 12)).astype(np.float32)
    u[keypoints, 0], w_shp[keypoints, :40], w_exp[keypoints, :10] = u68, w_shp68, w_exp68
    data = {"u": u, "w_shp": w_shp, "w_exp": w_exp, "keypoints": keypoints, "tri": rng.integers(0, vertices, (3, 20))}
    if drop is not None:
        del data[drop]
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return path


def rotation_face3d(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """face3d ``angle2matrix_3ddfa`` written out again (independent of qlspec)."""
    x, y, z = pitch, yaw, roll
    rx = np.array([[1, 0, 0], [0, np.cos(x), np.sin(x)], [0, -np.sin(x), np.cos(x)]])
    ry = np.array([[np.cos(y), 0, -np.sin(y)], [0, 1, 0], [np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(z), np.sin(z), 0], [-np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return rx.dot(ry).dot(rz)


def image_landmarks(pose_para: np.ndarray, shape_para: np.ndarray, exp_para: np.ndarray, seed: int = 0) -> np.ndarray:
    """(2, 68) 0-based, y-down image points of the fit, in 3DDFA V2's frame convention (x - 1, H - y)."""
    u, w_shp, w_exp = fake_basis(seed)
    verts = (u + w_shp @ shape_para[:40] + w_exp @ exp_para[:10]).reshape(68, 3)
    pitch, yaw, roll, tx, ty, tz, f = pose_para
    q = f * verts @ rotation_face3d(pitch, yaw, roll).T + np.array([tx, ty, tz])
    return np.stack([q[:, 0] - 1, H - q[:, 1]])


def fake_image(rng: np.random.Generator, colour: tuple[int, int, int] | None = None) -> Image.Image:
    if colour is None:
        arr = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    else:
        arr = np.zeros((H, W, 3), np.uint8) + np.array(colour, np.uint8)
    return Image.fromarray(arr, "RGB")


def random_fit(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pose = np.array(
        [
            rng.normal(0, 0.15),
            rng.uniform(-1.2, 1.2),
            rng.normal(0, 0.1),
            W / 2 + rng.normal(0, 4),
            H / 2 + rng.normal(0, 4),
            rng.normal(0, 5),
            rng.uniform(0.5, 0.7),
        ]
    )
    shape = np.concatenate([rng.normal(0, 2e5, 40), rng.normal(0, 1e4, 159)])
    exp = np.concatenate([rng.normal(0, 1.0, 10), rng.normal(0, 0.3, 19)])
    return pose, shape, exp


def write_300wlp(root: Path, n: int = 3, seed: int = 0, *, skip_key: str | None = None, colour=None) -> list[dict]:
    """n images under root/AFW and root/HELEN (sub-folders), each with its .mat; returns the fits."""
    rng = np.random.default_rng(seed)
    fits = []
    for i in range(n):
        sub = root / ("AFW" if i % 2 == 0 else "HELEN")
        sub.mkdir(parents=True, exist_ok=True)
        pose, shape, exp = random_fit(rng)
        pt2d = image_landmarks(pose, shape, exp)
        mat = {
            "Pose_Para": pose[None, :].astype(np.float32),
            "Shape_Para": shape[:, None].astype(np.float32),
            "Exp_Para": exp[:, None].astype(np.float32),
            "pt2d": pt2d.astype(np.float64),
            "roi": np.zeros((1, 4)),
            "Illum_Para": np.zeros((1, 10)),
            "Color_Para": np.zeros((1, 7)),
            "Tex_Para": np.zeros((199, 1)),
        }
        if skip_key is not None:
            del mat[skip_key]
        name = f"image_{i:03d}"
        scipy.io.savemat(sub / f"{name}.mat", mat)
        fake_image(rng, colour).save(sub / f"{name}.jpg", quality=95)
        fits.append({"pose": pose.astype(np.float32).astype(np.float64), "shape": shape, "exp": exp, "pt2d": pt2d})
    (root / "landmarks" / "AFW").mkdir(parents=True, exist_ok=True)  # 300W-LP's landmark folder: no images
    scipy.io.savemat(root / "landmarks" / "AFW" / "image_000_pts.mat", {"pts_2d": np.zeros((68, 2))})
    return fits


def write_aflw2000(root: Path, n: int = 3, seed: int = 1, *, with_params: tuple[int, ...] = ()) -> list[dict]:
    """n AFLW2000-3D-style images + .mat (pt3d_68, Pose_Para; Shape/Exp only for indices in with_params)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    fits = []
    for i in range(n):
        pose, shape, exp = random_fit(rng)
        pt2d = image_landmarks(pose, shape, exp)
        pt3d = np.concatenate([pt2d, rng.normal(0, 10, (1, 68))])
        mat = {"pt3d_68": pt3d, "Pose_Para": pose[None, :].astype(np.float32)}
        if i in with_params:
            mat |= {"Shape_Para": shape[:, None], "Exp_Para": exp[:, None]}
        scipy.io.savemat(root / f"image{i:05d}.mat", mat)
        fake_image(rng).save(root / f"image{i:05d}.jpg", quality=95)
        fits.append({"pose": pose.astype(np.float32).astype(np.float64), "pt2d": pt2d})
    return fits
