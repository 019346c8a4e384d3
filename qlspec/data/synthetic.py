"""The synthetic 3DDFA data set: faces of `synthetic_face_model` rendered into face-like crops.

Each image ``i`` is a pure function of ``(seed, i, size)``: it draws from its own generator
``numpy.random.default_rng([seed, i])``, so a set is identical whatever the number of worker
processes, and the first k images of ``render_synthetic(n, seed)`` are those of
``render_synthetic(k, seed)``. Use different seeds for the training and validation splits.

Parameter ranges (angles in degrees, lengths in model millimetres unless stated):

- yaw: with probability 0.8 uniform in [-60, 60], else uniform in 60..90 with a random sign
  (so about 40 / 40 / 20 % of faces in the |yaw| bins [0,30], (30,60], >60);
- pitch: normal(0, 10) clipped to [-35, 35]; roll: normal(0, 9) clipped to [-30, 30];
- shape ``alpha_shp[i]``: normal(0, 2.5 * 0.92**i) clipped to +-2.5 standard deviations (each shape
  column moves the landmarks 1 mm RMS per unit);
- expression ``alpha_exp[k]``: 0 unless active; when active (probability in brackets) uniform in
  jaw_open [0.45] 0..1.2, smile [0.5] -0.6..1, pucker [0.25] 0..1, brow_raise [0.4] -0.5..1,
  frown [0.3] 0..1, blink [0.15] 0..1, wink [0.15] -0.5..1, mouth_shift [0.3] -1..1,
  lips_part [0.3] 0..1, jaw_sideways [0.3] -1..1;
- scale: chosen so that the larger side of the 68-landmark bounding box is uniform in
  [0.58, 0.75] x size pixels (70-90 px at 120; 3DDFA's crop from landmarks gives about 85);
- translation: the landmark box centre sits at the crop centre plus normal(0, 3 px) clipped to
  +-7 px per axis (pixel amounts are for size 120 and scale with size); the depth offset
  ``param[11]`` is always 0 (weak perspective: depth is not imaged);

Appearance, all random per image: background (colour gradient, low-frequency colour noise, or
clutter of rectangles and ellipses); skin tone (light to dark) and hair colour (or bald); head,
hair (short or long), neck; flat-shaded face mesh lit by a directional light (azimuth +-70,
elevation -40..50, ambient 0.35-0.65) with back faces culled and painter's depth order, so the
far side of a turned face is hidden; eyes with iris, pupil, gaze and lids; brows; nostrils; lips
with an open mouth and teeth; optional beard (0.1), fringe (0.25), glasses (0.08, a third of them
dark); 0-2 occluders (probability 0.3: bars, boxes, ellipses, some skin-coloured like a hand);
image-wide light gradient, colour cast and brightness; blur (0.3) and Gaussian noise (sigma 0-8).
Drawing is 2x supersampled, then box-filtered down.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from qlspec.data.faceset import FaceSet
from qlspec.face.morphable import NUM_EXPRESSION, NUM_SHAPE, FaceModel, pose_matrix, synthetic_face_model
from qlspec.face.pose import yaw_deg

__all__ = ["render_face", "render_synthetic", "sample_params"]

_SS = 2  # supersampling factor
_CHUNK = 50  # images per worker task

# (probability active, low, high) per expression coefficient, in EXPRESSION_NAMES order.
_EXPRESSION_PRIOR = (
    (0.45, 0.0, 1.2),
    (0.5, -0.6, 1.0),
    (0.25, 0.0, 1.0),
    (0.4, -0.5, 1.0),
    (0.3, 0.0, 1.0),
    (0.15, 0.0, 1.0),
    (0.15, -0.5, 1.0),
    (0.3, -1.0, 1.0),
    (0.3, 0.0, 1.0),
    (0.3, -1.0, 1.0),
)
_SHAPE_STD = 2.5 * 0.92 ** np.arange(NUM_SHAPE)


def sample_params(rng: np.random.Generator, model: FaceModel, size: int = 120) -> np.ndarray:
    """One face's de-normalised parameters, float64 ``(62,)``, drawn as the module docstring states."""
    if rng.random() < 0.8:
        yaw = rng.uniform(-60.0, 60.0)
    else:
        yaw = rng.choice([-1.0, 1.0]) * rng.uniform(60.0, 90.0)
    pitch = float(np.clip(rng.normal(0.0, 10.0), -35.0, 35.0))
    roll = float(np.clip(rng.normal(0.0, 9.0), -30.0, 30.0))
    shp = np.clip(rng.normal(size=NUM_SHAPE), -2.5, 2.5) * _SHAPE_STD
    exp = np.zeros(NUM_EXPRESSION)
    for k, (p_active, lo, hi) in enumerate(_EXPRESSION_PRIOR):
        if rng.random() < p_active:
            exp[k] = rng.uniform(lo, hi)
    rot = pose_matrix(*np.radians([[yaw], [pitch], [roll]]))[0]

    params = np.zeros(62)
    params[:12] = np.concatenate([rot, np.zeros((3, 1))], 1).reshape(-1)
    params[12:52], params[52:62] = shp, exp
    pts = model.landmarks(params[None])[0]  # rotated, unit scale, no offset
    lo_xy, hi_xy = pts[:2].min(1), pts[:2].max(1)
    scale = rng.uniform(0.58, 0.75) * size / float(np.max(hi_xy - lo_xy))
    centre = (size - 1) / 2 + np.clip(rng.normal(0.0, 3.0, 2), -7.0, 7.0) * (size / 120)
    offset = np.zeros(3)
    offset[:2] = centre - scale * (lo_xy + hi_xy) / 2
    params[:12] = np.concatenate([scale * rot, offset[:, None]], 1).reshape(-1)
    return params


# --------------------------------------------------------------------------------------------------
# Rendering


class _Canvas:
    """A supersampled RGB canvas and the projection of model-mm points onto it."""

    def __init__(self, params: np.ndarray, background: Image.Image) -> None:
        p = params[:12].reshape(3, 4)
        self.sr, self.offset = p[:, :3], p[:, 3]
        self.img = background
        self.draw = ImageDraw.Draw(self.img)

    def project(self, pts_mm: np.ndarray) -> np.ndarray:
        """``(K, 3)`` model-mm points -> ``(K, 3)`` canvas pixels (x, y) and depth (crop pixels)."""
        q = pts_mm @ self.sr.T + self.offset
        q[:, :2] = _SS * q[:, :2] + (_SS - 1) / 2  # crop pixel centre j -> canvas pixel centre
        return q

    def polygon(self, xy: np.ndarray, fill: np.ndarray, outline: np.ndarray | None = None) -> None:
        self.draw.polygon(xy[:, :2].ravel().tolist(), fill=_rgb(fill), outline=None if outline is None else _rgb(outline))

    def line(self, xy: np.ndarray, fill: np.ndarray, width: float) -> None:
        self.draw.line(xy[:, :2].ravel().tolist(), fill=_rgb(fill), width=max(1, round(width)), joint="curve")


def _rgb(c: np.ndarray) -> tuple[int, int, int]:
    c = np.clip(np.asarray(c), 0, 255).astype(int)
    return int(c[0]), int(c[1]), int(c[2])


def _front(q: np.ndarray) -> bool:
    """True if the projected triangle ``q`` (3, >=2) keeps the frontal (positive) winding."""
    (ax, ay), (bx, by), (cx, cy) = q[0, :2], q[1, :2], q[2, :2]
    return (bx - ax) * (cy - ay) - (by - ay) * (cx - ax) > 0


def _circle(centre: np.ndarray, rx: float, ry: float, n: int = 12) -> np.ndarray:
    """``(n, 3)`` points of an ellipse facing the camera in model space (constant z)."""
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    return centre + np.stack([rx * np.cos(t), ry * np.sin(t), np.zeros(n)], 1)


def _background(rng: np.random.Generator, side: int) -> Image.Image:
    kind = rng.integers(3)
    if kind == 1:  # low-frequency colour noise
        k = int(rng.integers(2, 7))
        grid = rng.uniform(0, 255, (k, k, 3)).astype(np.uint8)
        return Image.fromarray(grid).resize((side, side), Image.Resampling.BICUBIC)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ang = rng.uniform(0, 2 * np.pi)
    t = np.linspace(0.0, 1.0, 16)
    ramp = np.clip(0.5 + (np.cos(ang) * (t[None, :] - 0.5) + np.sin(ang) * (t[:, None] - 0.5)), 0, 1)
    img = Image.fromarray((c0 + ramp[..., None] * (c1 - c0)).astype(np.uint8)).resize((side, side), Image.Resampling.BILINEAR)
    if kind == 2:  # clutter
        d = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(3, 9))):
            x0, y0 = rng.uniform(-0.2, 1.0, 2) * side
            w, h = rng.uniform(0.1, 0.6, 2) * side
            box = [x0, y0, x0 + w, y0 + h]
            col = _rgb(rng.uniform(0, 255, 3))
            (d.rectangle if rng.random() < 0.5 else d.ellipse)(box, fill=col)
    return img


_SKIN_LIGHT = np.array([240.0, 205.0, 180.0])
_SKIN_DARK = np.array([85.0, 55.0, 40.0])
_HAIR = np.array([[20, 15, 10], [60, 40, 25], [110, 75, 40], [190, 160, 100], [150, 150, 150], [130, 50, 20]], float)


def render_face(params: np.ndarray, model: FaceModel, rng: np.random.Generator, size: int = 120) -> np.ndarray:
    """Draw one face with parameters `params` (62,) of `model`; returns uint8 ``(size, size, 3)`` **RGB**.

    `rng` draws the appearance (colours, light, accessories, occluders, noise); the landmark
    geometry is fully given by `params`.
    """
    side = size * _SS
    cv = _Canvas(params, _background(rng, side))
    ident = np.array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0], float)
    mm = model.vertices(np.concatenate([ident, params[12:]])[None])[0].T  # (V, 3) unposed, in mm
    q = cv.project(mm)
    unit = float(np.linalg.norm(cv.sr[0])) * _SS  # canvas pixels per mm

    skin = _SKIN_DARK + rng.uniform() ** 0.8 * (_SKIN_LIGHT - _SKIN_DARK) + rng.uniform(-12, 12, 3)
    bald = rng.random() < 0.08
    hair = skin * 0.85 if bald else _HAIR[rng.integers(len(_HAIR))] * rng.uniform(0.8, 1.2)
    az, el = np.radians(rng.uniform(-70, 70)), np.radians(rng.uniform(-40, 50))
    light = np.array([np.sin(az) * np.cos(el), -np.sin(el), -np.cos(az) * np.cos(el)])
    ambient = rng.uniform(0.35, 0.65)
    diffuse = rng.uniform(0.45, 0.8)

    # Behind the face: long hair, neck, head (a projected ellipsoid, in hair colour).
    if not bald and rng.random() < 0.3:
        drop = rng.uniform(60, 140)
        cv.polygon(cv.project(np.array([[-80, -40, 55], [80, -40, 55], [75, drop, 60], [-75, drop, 60]], float)), hair * 0.9)
    cv.polygon(cv.project(np.array([[-42, 30, 45], [42, 30, 45], [46, 170, 40], [-46, 170, 40]], float)), skin * (ambient + 0.1))
    radii = np.array([76.0, 85.0, 90.0]) * rng.uniform(0.95, 1.08)
    m2 = cv.sr[:2] * _SS
    cov = m2 @ np.diag(radii**2) @ m2.T
    t = np.linspace(0, 2 * np.pi, 28, endpoint=False)
    ell = cv.project(np.array([[0.0, -40.0, 35.0]]))[0, :2] + (np.linalg.cholesky(cov) @ np.stack([np.cos(t), np.sin(t)])).T
    cv.polygon(ell, hair * (ambient + 0.25))

    # Face mesh and features, drawn far to near (painter's order) with back faces culled.
    items: list[tuple[float, Any]] = []  # (depth, draw function or (xy, rgb) of a triangle)
    tri = model.tri
    a, b, c = mm[tri[:, 0]], mm[tri[:, 1]], mm[tri[:, 2]]
    normal = np.cross(b - a, c - a) @ (cv.sr / np.linalg.norm(cv.sr[0])).T  # rotated frame
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    shade = ambient + diffuse * np.clip(-normal @ light, 0.0, None)  # -normal faces the camera
    qt = q[tri]  # (T, 3, 3)
    e1, e2 = qt[:, 1, :2] - qt[:, 0, :2], qt[:, 2, :2] - qt[:, 0, :2]
    front = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0] > 0
    cols = np.clip(skin * (shade * rng.uniform(0.97, 1.03, len(tri)))[:, None], 0, 255).astype(int)
    depth = qt[:, :, 2].mean(1)
    for k in np.flatnonzero(front).tolist():
        items.append((float(depth[k]), (qt[k, :, :2].ravel().tolist(), tuple(cols[k].tolist()))))

    eps = 1.5 * unit / _SS  # features sit 1.5 mm in front of the skin below them
    iris_col = np.array([[60, 35, 20], [35, 25, 15], [70, 100, 140], [70, 110, 70]], float)[rng.integers(4)]
    gaze = np.array([rng.uniform(-2.5, 2.5), rng.uniform(-1.2, 1.2), 0.0])
    for idx, ref in ((np.arange(36, 42), (36, 39, 40)), (np.arange(42, 48), (42, 45, 46))):
        if _front(q[list(ref)]):
            items.append((float(q[idx, 2].mean()) - eps, lambda idx=idx: _eye(cv, mm, q, idx, iris_col, gaze, skin, hair, unit)))
    brow_thick = rng.uniform(2.0, 4.5)
    for idx, ref in ((np.arange(17, 22), (17, 21, 39)), (np.arange(22, 27), (22, 26, 45))):
        if _front(q[list(ref)]):
            inner_first = idx[0] == 22
            th = brow_thick * (np.array([1.0, 1.0, 1.0, 0.8, 0.6]) if inner_first else np.array([0.6, 0.8, 1.0, 1.0, 1.0]))
            low = mm[idx] + np.stack([np.zeros(5), th, np.full(5, 0.5)], 1)
            poly = np.concatenate([q[idx], cv.project(low)[::-1]])
            items.append((float(q[idx, 2].mean()) - eps, lambda poly=poly: cv.polygon(poly, hair * 0.6 * (ambient + 0.2))))
    if _front(q[[31, 35, 33]]):
        items.append((float(q[31:36, 2].mean()) - eps, lambda: _nose(cv, mm, q, skin, ambient)))
    if _front(q[[48, 54, 57]]):
        lips = skin * np.array([0.85, 0.58, 0.58]) + np.array([25.0, 0.0, 0.0])
        if rng.random() < 0.1:
            lips = np.array([rng.uniform(120, 200), 20.0, rng.uniform(30, 80)])
        items.append((float(q[48:68, 2].mean()) - eps, lambda: _mouth(cv, mm, q, lips * (ambient + 0.3), unit)))
    if rng.random() < 0.1 and not bald:
        inner = mm[[54, 55, 56, 57, 58, 59, 48]] + [0, 4, 0]
        poly = np.concatenate([q[2:15], cv.project(inner)])
        items.append((float(q[4:13, 2].mean()) - eps / 2, lambda: cv.polygon(poly, hair * 0.8 * (ambient + 0.2))))
    items.sort(key=lambda it: -it[0])
    for _, item in items:
        if callable(item):
            item()
        else:
            cv.draw.polygon(item[0], fill=item[1])

    if not bald and rng.random() < 0.25:  # fringe across the forehead
        xs = np.linspace(-58, 58, 9)
        top = np.stack([xs, np.full(9, -80.0), -10 + 0.012 * xs**2 - 2], 1)
        low = top + np.stack([np.zeros(9), rng.uniform(8, 38, 9), np.zeros(9)], 1)
        cv.polygon(cv.project(np.concatenate([top, low[::-1]])), hair * (ambient + 0.2))
    if rng.random() < 0.08:
        _glasses(cv, mm, rng, unit)
    if rng.random() < 0.3:
        for _ in range(int(rng.integers(1, 3))):
            _occluder(cv, q, rng, skin, unit)

    img = cv.img
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.6, 2.0)))
    img = img.reduce(_SS)
    arr = np.asarray(img, np.float32)
    t = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    gx, gy = rng.uniform(-0.35, 0.35, 2)
    gain = (1 + gx * t[None, :] + gy * t[:, None])[..., None] * rng.uniform(0.85, 1.15, 3) * rng.uniform(0.7, 1.25)
    arr = arr * gain.astype(np.float32) + rng.normal(0.0, rng.uniform(0, 8), arr.shape).astype(np.float32)
    return np.clip(np.round(arr), 0, 255).astype(np.uint8)


def _eye(
    cv: _Canvas,
    mm: np.ndarray,
    q: np.ndarray,
    idx: np.ndarray,
    iris_col: np.ndarray,
    gaze: np.ndarray,
    skin: np.ndarray,
    hair: np.ndarray,
    unit: float,
) -> None:
    outline = q[idx]
    cv.polygon(outline, np.array([225.0, 222.0, 215.0]))
    centre = mm[idx].mean(0) + gaze - [0, 0, 1.0]
    width = float(np.linalg.norm(mm[idx[3]] - mm[idx[0]]))
    lo, hi = np.floor(outline[:, :2].min(0)).astype(int) - 1, np.ceil(outline[:, :2].max(0)).astype(int) + 2
    if np.any(hi - lo < 2):
        return
    box = (int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1]))
    layer = cv.img.crop(box)
    mask = Image.new("L", layer.size, 0)
    shift = np.array([lo[0], lo[1], 0])
    ImageDraw.Draw(mask).polygon((outline - shift)[:, :2].ravel().tolist(), fill=255)
    d = ImageDraw.Draw(layer)
    r = 0.21 * width
    for pts, col in (
        (_circle(centre, r, r), iris_col),
        (_circle(centre, 0.4 * r, 0.4 * r), np.array([10.0, 10.0, 10.0])),
        (_circle(centre + [0.3 * r, -0.35 * r, -0.1], 0.15 * r, 0.15 * r, 6), np.array([240.0, 240.0, 240.0])),
    ):
        d.polygon((cv.project(pts) - shift)[:, :2].ravel().tolist(), fill=_rgb(col))
    cv.img.paste(layer, box[:2], mask)
    cv.line(q[idx[[0, 1, 2, 3]]], hair * 0.4, 0.9 * unit)
    cv.line(q[idx[[3, 4, 5, 0]]], skin * 0.55, 0.4 * unit)


def _nose(cv: _Canvas, mm: np.ndarray, q: np.ndarray, skin: np.ndarray, ambient: float) -> None:
    for a, b in ((31, 32), (35, 34)):
        centre = 0.45 * mm[a] + 0.55 * mm[b] + [0.0, -1.8, 0.0]
        cv.polygon(cv.project(_circle(centre, 2.8, 1.4, 10)), skin * 0.3)
    cv.line(q[31:36], skin * 0.55 * (ambient + 0.3), 0.5 * cv.sr[0].dot(cv.sr[0]) ** 0.5 * _SS)


def _mouth(cv: _Canvas, mm: np.ndarray, q: np.ndarray, lips: np.ndarray, unit: float) -> None:
    cv.polygon(q[48:60], lips)
    inner = q[60:68]
    gap = float(np.linalg.norm(mm[66] - mm[62]))
    if gap > 1.5:
        cv.polygon(inner, np.array([60.0, 20.0, 25.0]))
        teeth = min(0.45 * gap, 4.0)
        upper = mm[60:65]
        poly = np.concatenate([q[60:65], cv.project(upper + [0, teeth, 0.5])[::-1]])
        cv.polygon(poly, np.array([230.0, 225.0, 210.0]))
    else:
        cv.line(q[[60, 61, 62, 63, 64]], lips * 0.45, 0.6 * unit)


def _glasses(cv: _Canvas, mm: np.ndarray, rng: np.random.Generator, unit: float) -> None:
    frame = rng.uniform(0, 80, 3)
    dark = rng.random() < 0.35
    centres = [mm[36:42].mean(0) - [0, 0, 12], mm[42:48].mean(0) - [0, 0, 12]]
    for c in centres:
        ring = cv.project(_circle(c, 15.0, 12.0, 16))
        if dark:
            cv.polygon(ring, np.array([20.0, 20.0, 25.0]))
        cv.line(np.concatenate([ring, ring[:1]]), frame, 1.2 * unit)
    cv.line(cv.project(np.array([centres[0] + [15, 0, 0], centres[1] - [15, 0, 0]])), frame, 1.2 * unit)


def _occluder(cv: _Canvas, q: np.ndarray, rng: np.random.Generator, skin: np.ndarray, unit: float) -> None:
    px = cv.img.size[0] / 120  # canvas pixels per crop pixel of a 120 crop, scaled with size
    centre = q[rng.integers(68), :2] + rng.normal(0.0, 10.0 * px, 2)
    col = skin * rng.uniform(0.8, 1.1) if rng.random() < 0.3 else rng.uniform(0, 255, 3)
    w, h = rng.uniform(12, 45, 2) * px / 2
    ang = rng.uniform(0, np.pi)
    kind = rng.integers(3)
    if kind == 2:  # bar
        h = rng.uniform(2, 6) * px
        w *= 2.5
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    if kind == 1:
        t = np.linspace(0, 2 * np.pi, 20, endpoint=False)
        local = np.stack([w * np.cos(t), h * np.sin(t)], 1)
    else:
        local = np.array([[-w, -h], [w, -h], [w, h], [-w, h]])
    cv.polygon(centre + local @ rot.T, col)


def _render_range(args: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    seed, start, stop, size = args
    model = synthetic_face_model()
    images = np.empty((stop - start, size, size, 3), np.uint8)
    params = np.empty((stop - start, 62))
    for j, i in enumerate(range(start, stop)):
        rng = np.random.default_rng([seed, i])
        params[j] = sample_params(rng, model, size)
        images[j] = render_face(params[j], model, rng, size)[..., ::-1]  # RGB -> BGR
    return images, params


def render_synthetic(
    n: int,
    seed: int,
    size: int = 120,
    *,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> FaceSet:
    """Render `n` synthetic faces from `seed` (see module docstring); deterministic in (n, seed, size).

    `progress`, if given, is called with the number of images just finished (an increment, as
    ``rich.progress.Progress.advance`` takes). `workers` processes render in parallel (default
    ``min(2, os.cpu_count())``; 1 renders in this process); the result does not depend on it.
    Landmarks and yaw are computed from the parameters (`FaceModel.landmarks`, `qlspec.face.pose`).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0 (got {n})")
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    tasks = [(seed, s, min(s + _CHUNK, n), size) for s in range(0, n, _CHUNK)]
    images = np.empty((n, size, size, 3), np.uint8)
    params = np.empty((n, 62))

    def take(task: tuple[int, int, int, int], out: tuple[np.ndarray, np.ndarray]) -> None:
        images[task[1] : task[2]], params[task[1] : task[2]] = out
        if progress is not None:
            progress(task[2] - task[1])

    if workers == 1 or len(tasks) <= 1:
        for task in tasks:
            take(task, _render_range(task))
    else:
        # fork: the children only run numpy and PIL code, and need no re-import of __main__.
        ctx: Any = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        with ctx.Pool(workers) as pool:
            for task, out in zip(tasks, pool.imap(_render_range, tasks)):
                take(task, out)

    # Ground truth comes from the stored float32 parameters, so that it is reproducible from them.
    params32 = params.astype(np.float32)
    p64 = params32.astype(np.float64)
    landmarks = synthetic_face_model().landmarks(p64)[:, :2].astype(np.float32)
    return FaceSet(images, params32, landmarks, yaw_deg(p64).astype(np.float32))
