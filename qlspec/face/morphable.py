"""A 3D morphable face model in 3DDFA's parameter layout, and the project's own synthetic instance.

Parameter layout (62 numbers per face, exactly as 3DDFA ``_parse_param``):

- ``P = param[0:12].reshape(3, 4)`` row-major; ``R = P[:, :3]`` is a *scaled* rotation
  (scale times an orthonormal matrix), ``offset = P[:, 3]``;
- ``alpha_shp = param[12:52]`` (40 shape coefficients), ``alpha_exp = param[52:62]`` (10 expression).

Vertices: ``pts3d = R @ reshape(u + W_shp @ alpha_shp + W_exp @ alpha_exp, (3, V), order="F") + offset``.
``u``, ``W_shp``, ``W_exp`` are stored as in a BFM file: flattened ``3V`` rows with x, y, z
interleaved per vertex (the Fortran-order reshape de-interleaves them), and ``keypoints`` indexes the
204 rows (68 points x 3) of the iBUG-68 landmarks.

Coordinate frame of the synthetic model (`synthetic_face_model`): model units are millimetres, with
x to the image right, y **down**, z **away** from the camera (a right-handed frame). With its
parameters, rows 0 and 1 of ``pts3d`` are 0-based pixel coordinates of the 120x120 crop (pixel
centres at integer coordinates, y down) and row 2 is depth in pixels (larger = farther). 3DDFA's BFM
instead yields y up, 1-based; a model built with ``frame="3ddfa"`` converts its output to the
synthetic model's frame with 3DDFA_V2's ``similar_transform`` rule (``x - 1``, ``size - y``, ``z - 1``).

The synthetic model is the project's own invention (hand-placed iBUG-68 mean shape, smooth random
shape fields, hand-made expression fields); it is not derived from the Basel Face Model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import torch  # imported at run time only for torch parameters

__all__ = [
    "EXPRESSION_NAMES",
    "NUM_EXPRESSION",
    "NUM_LANDMARKS",
    "NUM_PARAMS",
    "NUM_SHAPE",
    "FaceModel",
    "pose_matrix",
    "synthetic_face_model",
]

NUM_LANDMARKS = 68
NUM_SHAPE = 40
NUM_EXPRESSION = 10
NUM_PARAMS = 12 + NUM_SHAPE + NUM_EXPRESSION


@dataclass(frozen=True, eq=False)
class FaceModel:
    """A morphable model: mean shape, bases and the 68 landmark rows, BFM-style (see module docstring).

    Attributes:
        u: ``(3V,)`` mean shape, xyz interleaved per vertex.
        w_shp: ``(3V, 40)`` shape basis.
        w_exp: ``(3V, 10)`` expression basis.
        keypoints: ``(204,)`` int indices into the ``3V`` rows, 68 points x (x, y, z) in iBUG order.
        tri: ``(T, 3)`` vertex indices of a triangulation of the ``V`` vertices (may be empty).
        frame: ``"pixel"`` if `vertices` output is already 0-based, y-down crop pixels;
            ``"3ddfa"`` if the basis yields 3DDFA's 1-based, y-up frame (converted on output).
        size: crop size in pixels (used by the ``"3ddfa"`` conversion).
    """

    u: np.ndarray
    w_shp: np.ndarray
    w_exp: np.ndarray
    keypoints: np.ndarray
    tri: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))
    frame: Literal["pixel", "3ddfa"] = "pixel"
    size: int = 120

    def __post_init__(self) -> None:
        rows = self.u.shape[0]
        if self.u.ndim != 1 or rows % 3:
            raise ValueError(f"u must be (3V,), got {self.u.shape}")
        if self.w_shp.shape != (rows, NUM_SHAPE) or self.w_exp.shape != (rows, NUM_EXPRESSION):
            raise ValueError(
                f"bases must be ({rows}, {NUM_SHAPE}) and ({rows}, {NUM_EXPRESSION}), got {self.w_shp.shape} and {self.w_exp.shape}"
            )
        if self.keypoints.shape != (3 * NUM_LANDMARKS,):
            raise ValueError(f"keypoints must be (204,), got {self.keypoints.shape}")

    @property
    def num_vertices(self) -> int:
        return self.u.shape[0] // 3

    def landmarks(self, params: Any) -> Any:
        """``(N, 62)`` parameters -> ``(N, 3, 68)`` landmarks (numpy array or torch tensor in, same out).

        Differentiable when given a torch tensor; computed in the input's dtype.
        """
        k = self.keypoints
        return self._reconstruct(params, self.u[k], self.w_shp[k], self.w_exp[k])

    def vertices(self, params: Any) -> Any:
        """``(N, 62)`` parameters -> ``(N, 3, V)`` all model vertices (numpy or torch, as `landmarks`)."""
        return self._reconstruct(params, self.u, self.w_shp, self.w_exp)

    def _reconstruct(self, params: Any, u: np.ndarray, w_shp: np.ndarray, w_exp: np.ndarray) -> Any:
        if params.ndim != 2 or params.shape[1] != NUM_PARAMS:
            raise ValueError(f"params must be (N, {NUM_PARAMS}), got {tuple(params.shape)}")
        n, v = params.shape[0], u.shape[0] // 3
        u_: np.ndarray | torch.Tensor  # the model in the params' own kind and dtype
        ws: np.ndarray | torch.Tensor
        we: np.ndarray | torch.Tensor
        if isinstance(params, np.ndarray):
            dt = params.dtype if params.dtype in (np.float32, np.float64) else np.float64
            u_, ws, we = u.astype(dt), w_shp.astype(dt), w_exp.astype(dt)
        else:
            import torch

            def as_t(a: np.ndarray) -> torch.Tensor:
                return torch.as_tensor(a, dtype=params.dtype, device=params.device)

            u_, ws, we = as_t(u), as_t(w_shp), as_t(w_exp)
        p = params[:, :12].reshape(n, 3, 4)
        shape = u_ + params[:, 12:52] @ ws.T + params[:, 52:62] @ we.T  # (N, 3V), interleaved
        # Fortran-order reshape of each (3V,) vector to (3, V) == C-order (V, 3) transposed.
        shape = shape.reshape(n, v, 3).transpose(1, 2) if not isinstance(shape, np.ndarray) else (shape.reshape(n, v, 3).transpose(0, 2, 1))
        pts = p[:, :, :3] @ shape + p[:, :, 3:4]
        if self.frame == "3ddfa":
            # 3DDFA_V2 similar_transform with an identity roi: 1-based y-up -> 0-based y-down.
            x, y, z = pts[:, 0:1] - 1, self.size - pts[:, 1:2], pts[:, 2:3] - 1
            pts = np.concatenate([x, y, z], 1) if isinstance(pts, np.ndarray) else _torch_cat([x, y, z])
        return pts


def _torch_cat(parts: list[Any]) -> Any:
    import torch

    return torch.cat(parts, 1)


def pose_matrix(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """Angles in radians, each ``(N,)`` -> orthonormal rotations ``(N, 3, 3)``.

    ``R = Rz(roll) @ Ry(-yaw) @ Rx(pitch)`` (right-handed elementary rotations), chosen so that
    3DDFA's ``matrix2angle`` (`qlspec.face.pose`) returns the same angles: ``asin(R[2, 0]) = yaw``,
    ``atan2(R[2, 1], R[2, 2]) = pitch``, ``atan2(R[1, 0], R[0, 0]) = roll`` for ``|yaw| < 90`` degrees.
    In the synthetic model's frame (x right, y down, z away) a positive yaw turns the nose towards
    the image right (increasing x), a positive roll turns the face clockwise on screen.
    """
    yaw, pitch, roll = (np.asarray(a, np.float64) for a in (yaw, pitch, roll))
    one, zero = np.ones_like(yaw), np.zeros_like(yaw)

    def stack(rows: list[list[np.ndarray]]) -> np.ndarray:
        return np.stack([np.stack(r, -1) for r in rows], -2)

    c, s = np.cos(pitch), np.sin(pitch)
    rx = stack([[one, zero, zero], [zero, c, -s], [zero, s, c]])
    c, s = np.cos(-yaw), np.sin(-yaw)
    ry = stack([[c, zero, s], [zero, one, zero], [-s, zero, c]])
    c, s = np.cos(roll), np.sin(roll)
    rz = stack([[c, -s, zero], [s, c, zero], [zero, zero, one]])
    return rz @ ry @ rx


# --------------------------------------------------------------------------------------------------
# The synthetic model. Mean shape in millimetres, x right, y down, z away from the camera; iBUG-68
# order; index comments name the iBUG point groups.


def _mean_landmarks() -> np.ndarray:
    """``(68, 3)`` hand-placed mean landmarks in mm (origin near the nose bridge)."""
    pts = np.zeros((NUM_LANDMARKS, 3))
    t = np.linspace(0.0, 1.0, 17)  # 0-16 jaw, image left (subject's right) -> chin -> image right
    pts[0:17, 0] = -68.0 * np.cos(np.pi * t)
    pts[0:17, 1] = -18.0 + 83.0 * np.sin(np.pi * t) ** 1.3
    pts[0:17, 2] = -6.0 + 52.0 * np.abs(np.cos(np.pi * t)) ** 1.5
    s = np.linspace(0.0, 1.0, 5)  # 17-21 right brow (outer -> inner), 22-26 left brow (inner -> outer)
    brow = np.stack([-55.0 + 43.0 * s, -37.0 - 6.0 * np.sin(np.pi * (0.15 + 0.7 * s)), 8.0 - 20.0 * s], 1)
    pts[17:22] = brow
    pts[22:27] = brow[::-1] * [-1, 1, 1]
    pts[27:31] = [[0, -28, -16], [0, -18, -21], [0, -8, -26], [0, 2, -33]]  # nose bridge -> tip
    pts[31:36] = [[-15, 10, -14], [-8, 12, -19], [0, 13, -22], [8, 12, -19], [15, 10, -14]]
    right_eye = np.array(  # 36 outer corner, 37-38 upper lid, 39 inner corner, 40-41 lower lid
        [[-45, -25, -2], [-37, -30, -7], [-27, -30, -8], [-18, -24, -8], [-27, -20, -8], [-37, -20, -7]], float
    )
    pts[36:42] = right_eye
    pts[42:48] = right_eye[[3, 2, 1, 0, 5, 4]] * [-1, 1, 1]  # 42 inner, 43-44 upper, 45 outer, 46-47 lower
    pts[48:60] = [  # outer lips: 48 corner, 49-53 upper, 54 corner, 55-59 lower
        [-25, 33, -8],
        [-15, 28, -14],
        [-6, 26, -17],
        [0, 27, -18],
        [6, 26, -17],
        [15, 28, -14],
        [25, 33, -8],
        [15, 39, -13],
        [6, 42, -16],
        [0, 43, -17],
        [-6, 42, -16],
        [-15, 39, -13],
    ]
    pts[60:68] = [  # inner lips: 60 corner, 61-63 upper, 64 corner, 65-67 lower
        [-21, 33.0, -10],
        [-7, 32.5, -16],
        [0, 32.5, -17],
        [7, 32.5, -16],
        [21, 33.0, -10],
        [7, 33.5, -16],
        [0, 33.5, -17],
        [-7, 33.5, -16],
    ]
    return pts


def _extra_vertices() -> np.ndarray:
    """Non-landmark surface vertices (forehead, temples, cheeks, chin, nose sides) for rendering."""
    half = []
    for x in np.linspace(8, 58, 4):  # forehead, two rows up to the hairline
        half.append([x, -55.0, -14 + 0.011 * x * x])
    for x in np.linspace(8, 48, 3):
        half.append([x, -74.0, -10 + 0.012 * x * x])
    half += [
        [64, -42, 28],
        [30, -10, -10],
        [20, 0, -14],
        [45, 5, -2],
        [32, 14, -10],
        [50, 24, 6],
        [38, 46, -2],
        [14, 52, -9],
        [10, -10, -17],
        [13, 2, -16],
        [22, 22, -10],
    ]
    half_a = np.array(half, float)
    centre = np.array([[0, -55, -14], [0, -74, -10], [0, 54, -11], [0, 20, -19]], float)
    return np.concatenate([centre, half_a, half_a * [-1, 1, 1]])


def _rigid_fields(p: np.ndarray) -> np.ndarray:
    """``(7, V, 3)`` displacement fields of a similarity transform at points ``p`` (V, 3)."""
    fields = [np.broadcast_to(np.eye(3)[k], p.shape) for k in range(3)]  # translations
    fields.append(p - p.mean(0))  # uniform scale
    for k in range(3):  # infinitesimal rotations: omega x p
        fields.append(np.cross(np.eye(3)[k], p - p.mean(0)))
    return np.stack(fields)


def _shape_fields(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(40, V, 3)`` smooth random displacement fields: 26 global polynomials, 14 local bumps."""
    x, y, z = p[:, 0] / 70.0, p[:, 1] / 70.0, p[:, 2] / 40.0
    monos = [(i, j, k) for i in range(4) for j in range(4) for k in range(3) if 1 <= i + j + k <= 3]
    out = []
    for b in range(26):
        symmetric = b % 5 != 4  # four in five bases keep the face left-right symmetric
        field = np.zeros_like(p)
        for c in range(3):
            odd_x_wanted = (c == 0) == symmetric  # symmetric: dx odd in x, dy and dz even in x
            for i, j, k in monos:
                if (i % 2 == 1) == odd_x_wanted:
                    field[:, c] += rng.normal() / (1 + i + j + k) * x**i * y**j * z**k
        out.append(field)
    mirror = np.array([-1.0, 1.0, 1.0])

    def bump(centre: np.ndarray, lin: np.ndarray, pts: np.ndarray) -> np.ndarray:
        w = np.exp(-np.sum((pts - centre) ** 2, 1) / (2 * 14.0**2))
        basis = np.concatenate([np.ones((len(pts), 1)), (pts - centre) / 14.0], 1)  # (V, 4)
        return (basis @ lin.T) * w[:, None]  # (V, 3): an affine field under a Gaussian window

    # Anchors: inner eye corners, outer eye corners, nose tip, nose base, mouth corners, lip
    # centres, brows, chin, jaw angles, cheeks, bridge, inner lips, outer brows, nostrils.
    anchors = [
        (39, 42),
        (36, 45),
        (30, 30),
        (33, 33),
        (48, 54),
        (51, 57),
        (19, 24),
        (8, 8),
        (4, 12),
        (2, 14),
        (27, 27),
        (62, 66),
        (17, 26),
        (31, 35),
    ]
    for a, b in anchors:
        lin = rng.normal(size=(3, 4))
        field = bump(p[a], lin, p)
        if a != b:  # the mirror image of the bump at a, placed at b: d_b(q) = M d_a(M q)
            field += bump(p[a], lin, p * mirror) * mirror
        out.append(field)
    return np.stack(out)


# Expression fields at alpha = 1, in mm, on the landmarks: {index: (dx, dy, dz)}.
_EXPRESSIONS: tuple[tuple[str, dict[int, tuple[float, float, float]]], ...] = (
    (
        "jaw_open",
        {
            **{k: (0, 14, 3) for k in (56, 57, 58, 65, 66, 67)},
            55: (0, 11, 3),
            59: (0, 11, 3),
            48: (0, 5, 1),
            54: (0, 5, 1),
            60: (0, 5, 1),
            64: (0, 5, 1),
            61: (0, -1, 0),
            62: (0, -1, 0),
            63: (0, -1, 0),
            8: (0, 13, 4),
            7: (0, 12, 4),
            9: (0, 12, 4),
            6: (0, 10, 3),
            10: (0, 10, 3),
            5: (0, 6, 2),
            11: (0, 6, 2),
            4: (0, 3, 1),
            12: (0, 3, 1),
        },
    ),
    (
        "smile",
        {
            48: (-5, -5, 3),
            54: (5, -5, 3),
            60: (-4, -4, 2),
            64: (4, -4, 2),
            49: (-2, -2, 0),
            53: (2, -2, 0),
            59: (-3, -2, 0),
            55: (3, -2, 0),
            56: (0, -1, 0),
            57: (0, -1, 0),
            58: (0, -1, 0),
            40: (0, -1.5, 0),
            41: (0, -1.5, 0),
            46: (0, -1.5, 0),
            47: (0, -1.5, 0),
        },
    ),
    (
        "pucker",
        {
            48: (7, 0, -4),
            54: (-7, 0, -4),
            60: (6, 0, -3),
            64: (-6, 0, -3),
            49: (3, 0, -5),
            53: (-3, 0, -5),
            59: (3, 0, -5),
            55: (-3, 0, -5),
            **{k: (0, 0, -6) for k in (50, 51, 52, 56, 57, 58)},
            **{k: (0, 0, -5) for k in (61, 62, 63, 65, 66, 67)},
        },
    ),
    (
        "brow_raise",
        {
            **{k: (0, -7, 0) for k in range(18, 26)},
            17: (0, -5, 0),
            26: (0, -5, 0),
            37: (0, -1.5, 0),
            38: (0, -1.5, 0),
            43: (0, -1.5, 0),
            44: (0, -1.5, 0),
        },
    ),
    ("frown", {19: (1, 2, 0), 20: (3, 4, 0), 21: (4, 5, -1), 24: (-1, 2, 0), 23: (-3, 4, 0), 22: (-4, 5, -1)}),
    ("blink", {37: (0, 9, 0), 38: (0, 9, 0), 43: (0, 9, 0), 44: (0, 9, 0), 40: (0, -1, 0), 41: (0, -1, 0), 46: (0, -1, 0), 47: (0, -1, 0)}),
    ("wink", {37: (0, 9, 0), 38: (0, 9, 0), 43: (0, -2, 0), 44: (0, -2, 0)}),
    ("mouth_shift", {**{k: (6, 0, 0) for k in range(48, 68)}, **{k: (1, 0, 0) for k in range(31, 36)}}),
    (
        "lips_part",
        {
            50: (0, -3, 0),
            51: (0, -3, 0),
            52: (0, -3, 0),
            61: (0, -3, 0),
            62: (0, -3, 0),
            63: (0, -3, 0),
            56: (0, 4, 0),
            57: (0, 4, 0),
            58: (0, 4, 0),
            65: (0, 4, 0),
            66: (0, 4, 0),
            67: (0, 4, 0),
        },
    ),
    (
        "jaw_sideways",
        {
            **{k: (6, 0, 0) for k in range(5, 12)},
            4: (3, 0, 0),
            12: (3, 0, 0),
            **{k: (4, 0, 0) for k in (55, 56, 57, 58, 59, 65, 66, 67)},
            **{k: (2, 0, 0) for k in (48, 54, 60, 64)},
        },
    ),
)

#: Names of the 10 expression coefficients, in parameter order (param[52 + k]).
EXPRESSION_NAMES: tuple[str, ...] = tuple(name for name, _ in _EXPRESSIONS)


def _spread(lmk_disp: np.ndarray, lmk: np.ndarray, extra: np.ndarray, sigma: float = 10.0) -> np.ndarray:
    """Extend a landmark displacement field to `extra` points by normalised Gaussian weights."""
    d2 = np.sum((extra[:, None, :] - lmk[None, :, :]) ** 2, -1)
    w = np.exp(-(d2 - d2.min(1, keepdims=True)) / (2 * sigma**2))
    w /= w.sum(1, keepdims=True)
    return w @ lmk_disp


@lru_cache(maxsize=1)
def synthetic_face_model() -> FaceModel:
    """The project's own morphable model, identical on every call and every machine.

    - 68 iBUG landmarks + 41 extra surface vertices (forehead, temples, cheeks, chin, nose sides);
      ``tri`` triangulates them (Delaunay of the frontal mean shape, front faces wound so that the
      2D cross product ``(b - a) x (c - a)`` is positive in the y-down image).
    - 40 shape columns: smooth random fields (seeded, fixed), projected orthogonal to similarity
      transforms on the landmarks (so shape never mimics pose), scaled to 1 mm RMS per landmark.
      Natural coefficient spread (used by the synthetic data set): std ``2.5 * 0.92**i`` mm.
    - 10 expression columns, `EXPRESSION_NAMES`, in mm at coefficient 1 (e.g. ``jaw_open`` drops
      the chin 13 mm, ``blink`` closes both eyes).
    """
    from scipy.spatial import Delaunay

    rng = np.random.default_rng(20240611)
    lmk = _mean_landmarks()
    extra = _extra_vertices()
    verts = np.concatenate([lmk, extra])
    nl = NUM_LANDMARKS

    fields = _shape_fields(verts, rng)
    rigid = _rigid_fields(lmk).reshape(7, -1).T  # (204, 7)
    w_shp = np.zeros((verts.size, NUM_SHAPE))
    rigid_all = _rigid_fields(verts)  # same linear combination applied to every vertex
    for i, f in enumerate(fields):
        # Least-squares similarity component of f on the landmarks, removed from all vertices.
        coef, *_ = np.linalg.lstsq(rigid, f[:nl].reshape(-1), rcond=None)
        f = f - np.tensordot(coef, rigid_all, 1)
        f /= np.sqrt(np.mean(np.sum(f[:nl] ** 2, 1)))
        w_shp[:, i] = f.reshape(-1)

    w_exp = np.zeros((verts.size, NUM_EXPRESSION))
    for i, (_, disp) in enumerate(_EXPRESSIONS):
        d = np.zeros((nl, 3))
        for k, v in disp.items():
            d[k] = v
        full = np.concatenate([d, _spread(d, lmk, extra)])
        w_exp[:, i] = full.reshape(-1)

    tri = Delaunay(verts[:, :2]).simplices.astype(np.int64)
    a, b, c = verts[tri[:, 0], :2], verts[tri[:, 1], :2], verts[tri[:, 2], :2]
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    tri[cross < 0] = tri[cross < 0][:, [0, 2, 1]]

    keypoints = (3 * np.arange(nl)[:, None] + np.arange(3)[None, :]).reshape(-1)
    return FaceModel(
        u=verts.reshape(-1).astype(np.float64),
        w_shp=w_shp,
        w_exp=w_exp,
        keypoints=keypoints.astype(np.int64),
        tri=tri,
    )
