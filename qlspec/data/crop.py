"""3DDFA's square face crop: where to cut (two ROI policies), how to cut and resize, how to map points.

A ROI is ``[sx, sy, ex, ey]`` in image pixels (0-based, pixel centres at integer coordinates, y down),
``ex - sx`` by ``ey - sy`` pixels, always square before rounding (3ddfa.md section 2.2):

- `roi_from_landmarks` (3DDFA ``parse_roi_box_from_landmark``, also the benchmark cropper's rule):
  the landmarks' bounding box, made a square of side ``max(w, h)`` about its centre, then grown to
  that square's diagonal ``sqrt(2) * max(w, h)``, same centre;
- `roi_from_box` (3DDFA ``parse_roi_box_from_bbox``, for a detector box): ``old_size = (w + h) / 2``,
  centre = box centre shifted **down** by ``shift * old_size`` (0.14), side ``int(old_size * scale)``
  (1.58, truncated toward zero as Python's ``int``).

`crop_image` rounds the ROI to integers (`round_roi`: Python ``round``, half to even, as 3DDFA's
``crop_img``), cuts ``ey - sy`` rows by ``ex - sx`` columns with zeros where the ROI leaves the image,
and resizes to ``size x size`` with `resize_bilinear` (an emulation of OpenCV's ``INTER_LINEAR``).

Point mapping between the image and the ``size x size`` crop follows 3DDFA_V2 ``similar_transform``
(3ddfa.md section 2.6): image ``x = x_crop * (ex - sx) / size + sx`` (same for y with ``ey - sy``),
both frames 0-based and y down (`from_crop`, and its inverse `to_crop`). `similar_transform` is the
full V2 rule from the network's 1-based, y-up crop frame. Note that this is 3DDFA's rule, not the
exact geometry of the half-pixel resize (which would be ``(x_crop + 0.5) * scale - 0.5 + sx``): the
two differ by ``0.5 * (scale - 1)`` image pixels, and the 3DDFA parameters and benchmark use the
former, so the project does too. Loaders map with the *rounded* ROI, the one the pixels were cut with.
"""

from __future__ import annotations

import math

import numpy as np

from qlspec.errors import QlspecError

__all__ = [
    "CROP_SIZE",
    "crop_image",
    "from_crop",
    "resize_bilinear",
    "roi_from_box",
    "roi_from_landmarks",
    "round_roi",
    "similar_transform",
    "to_crop",
]

CROP_SIZE = 120
_COEF_BITS = 11  # OpenCV INTER_RESIZE_COEF_BITS
_ONE = 1 << _COEF_BITS


def roi_from_landmarks(pts: np.ndarray) -> np.ndarray:
    """``(>=2, K)`` points (rows x, y, image pixels) -> float64 ``(4,)`` ROI ``[sx, sy, ex, ey]``.

    Centre = centre of the points' bounding box; side = ``sqrt(2) * max(w, h)`` of that box.
    """
    pts = np.asarray(pts, np.float64)
    if pts.ndim != 2 or pts.shape[0] < 2 or pts.shape[1] == 0:
        raise ValueError(f"points must be (>=2, K), got {pts.shape}")
    x0, y0, x1, y1 = pts[0].min(), pts[1].min(), pts[0].max(), pts[1].max()
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = math.sqrt(2.0) * max(x1 - x0, y1 - y0) / 2  # half the diagonal of the max(w, h) square
    return np.array([cx - half, cy - half, cx + half, cy + half])


def roi_from_box(box: np.ndarray, *, scale: float = 1.58, shift: float = 0.14) -> np.ndarray:
    """Detector box ``[x1, y1, x2, y2, ...]`` (image pixels) -> float64 ``(4,)`` ROI ``[sx, sy, ex, ey]``.

    ``old_size = ((x2 - x1) + (y2 - y1)) / 2``; centre ``((x1 + x2) / 2, (y1 + y2) / 2 + shift * old_size)``;
    side ``int(old_size * scale)`` (truncated); ROI = centre -/+ side / 2.
    """
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box, np.float64).reshape(-1)[:4])
    old_size = (x2 - x1 + y2 - y1) / 2
    cx = x2 - (x2 - x1) / 2
    cy = y2 - (y2 - y1) / 2 + old_size * shift
    side = int(old_size * scale)
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


def round_roi(roi: np.ndarray) -> np.ndarray:
    """ROI -> float64 ``(4,)`` of integers, Python ``round`` (half to even) as 3DDFA's ``crop_img``."""
    return np.array([float(round(float(v))) for v in np.asarray(roi, np.float64).reshape(-1)[:4]])


def crop_image(image: np.ndarray, roi: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Cut `roi` out of `image` and resize it to ``size x size``.

    Args:
        image: uint8 ``(H, W, C)`` (any channel order; it is kept) or ``(H, W)``.
        roi: ``[sx, sy, ex, ey]``, rounded with `round_roi` before cutting.
        size: output side in pixels.

    Returns:
        uint8 ``(size, size, C)`` (or ``(size, size)``): rows ``sy .. ey - 1`` and columns
        ``sx .. ex - 1`` of `image`, zero where they fall outside it, resized by `resize_bilinear`.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"image must be uint8 (H, W[, C]), got {image.dtype} {image.shape}")
    sx, sy, ex, ey = (int(v) for v in round_roi(roi))
    if ex <= sx or ey <= sy:
        raise QlspecError(f"empty crop box {[sx, sy, ex, ey]} (degenerate landmarks or box?)", where="crop")
    h, w = image.shape[:2]
    out = np.zeros((ey - sy, ex - sx) + image.shape[2:], np.uint8)
    ix0, iy0, ix1, iy1 = max(sx, 0), max(sy, 0), min(ex, w), min(ey, h)
    if ix1 > ix0 and iy1 > iy0:
        out[iy0 - sy : iy1 - sy, ix0 - sx : ix1 - sx] = image[iy0:iy1, ix0:ix1]
    return resize_bilinear(out, size, size)


def _linear_taps(n_src: int, n_dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV ``resizeGeneric`` INTER_LINEAR taps along one axis: indices i0, i1 and 11-bit weights w0, w1."""
    scale = 1.0 / (n_dst / n_src)  # OpenCV: scale_x = 1 / inv_scale_x, in double
    f = ((np.arange(n_dst) + 0.5) * scale - 0.5).astype(np.float32)  # (float)((dx + 0.5) * scale - 0.5)
    i0 = np.floor(f).astype(np.int64)
    f = f - i0.astype(np.float32)
    edge = (i0 < 0) | (i0 >= n_src - 1)  # replicate border: OpenCV sets fx = 0 and clamps sx
    f[edge] = 0.0
    i0 = np.clip(i0, 0, n_src - 1)
    i1 = np.minimum(i0 + 1, n_src - 1)
    w0 = np.rint((np.float32(1.0) - f) * np.float32(_ONE)).astype(np.int64)  # saturate_cast<short>: nearest, ties even
    w1 = np.rint(f * np.float32(_ONE)).astype(np.int64)
    return i0, i1, w0, w1


def resize_bilinear(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """uint8 ``(H, W[, C])`` -> uint8 ``(out_h, out_w[, C])``, emulating ``cv2.resize(..., INTER_LINEAR)``.

    Semantics (OpenCV ``resizeGeneric``, 8-bit path): source coordinate of output pixel ``d`` is
    ``(d + 0.5) * n_src / n_dst - 0.5`` (half-pixel centres), computed in float32; borders replicate;
    the two tap weights per axis are rounded to 11-bit fixed point (``w * 2048``, nearest). Rows are
    first combined horizontally into ``int`` sums ``h = p0 * wx0 + p1 * wx1``, then vertically as the
    SSE2/NEON kernel does: ``out = sat_u8((((h0 >> 4) * wy0 >> 16) + ((h1 >> 4) * wy1 >> 16) + 2) >> 2)``.
    OpenCV's scalar tail (``(h0 * wy0 + h1 * wy1 + 2**21) >> 22``), IPP builds and its special
    exact-2x upscaler can differ from this by one grey level on some pixels.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"image must be uint8 (H, W[, C]), got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    if (h, w) == (out_h, out_w):
        return image.copy()
    x0, x1, wx0, wx1 = _linear_taps(w, out_w)
    y0, y1, wy0, wy1 = _linear_taps(h, out_h)
    src = image.astype(np.int64)
    col = (-1,) + (1,) * (image.ndim - 2)  # weights broadcast over channels
    row = (-1,) + (1,) * (image.ndim - 1)  # ... and over columns
    horiz = src[:, x0] * wx0.reshape(col) + src[:, x1] * wx1.reshape(col)  # (H, out_w[, C])
    top = (horiz[y0] >> 4) * wy0.reshape(row) >> 16
    bottom = (horiz[y1] >> 4) * wy1.reshape(row) >> 16
    return np.clip((top + bottom + 2) >> 2, 0, 255).astype(np.uint8)


def _split_roi(roi: np.ndarray, size: int) -> tuple[float, float, float, float]:
    sx, sy, ex, ey = (float(v) for v in np.asarray(roi, np.float64).reshape(-1)[:4])
    if ex <= sx or ey <= sy:
        raise ValueError(f"roi must have ex > sx and ey > sy, got {[sx, sy, ex, ey]}")
    return sx, sy, (ex - sx) / size, (ey - sy) / size


def to_crop(pts: np.ndarray, roi: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Image points -> crop points: ``x' = (x - sx) * size / (ex - sx)``, ``y' = (y - sy) * size / (ey - sy)``.

    `pts` is ``(..., >=2, K)`` with rows x, y (0-based, y down) in image pixels; extra rows (z) are
    returned unchanged. Float64 out. Inverse of `from_crop`.
    """
    sx, sy, kx, ky = _split_roi(roi, size)
    out = np.array(pts, np.float64, copy=True)
    out[..., 0, :] = (out[..., 0, :] - sx) / kx
    out[..., 1, :] = (out[..., 1, :] - sy) / ky
    return out


def from_crop(pts: np.ndarray, roi: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Crop points -> image points: ``x = x' * (ex - sx) / size + sx``, same for y (V2 ``similar_transform`` 2-3).

    `pts` is ``(..., >=2, K)``, rows x, y in 0-based, y-down crop pixels (as `FaceSet` landmarks and
    a ``frame="3ddfa"`` `FaceModel` give them); extra rows are returned unchanged. Float64 out.
    """
    sx, sy, kx, ky = _split_roi(roi, size)
    out = np.array(pts, np.float64, copy=True)
    out[..., 0, :] = out[..., 0, :] * kx + sx
    out[..., 1, :] = out[..., 1, :] * ky + sy
    return out


def similar_transform(pts3d: np.ndarray, roi: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """3DDFA_V2 ``similar_transform``: ``(..., 3, K)`` points in the network's crop frame -> image frame.

    Input frame: 3DDFA's reconstruction ``R @ shape + offset`` in the ``size`` crop, 1-based, y up.
    Steps: ``x -= 1``, ``z -= 1``, ``y = size - y``; ``x = x * (ex - sx) / size + sx``,
    ``y = y * (ey - sy) / size + sy``; ``z *= ((ex - sx) + (ey - sy)) / (2 * size)``, then
    ``z -= min(z)`` over the K points of each face. Output: image pixels, 0-based, y down. Float64.
    """
    pts = np.array(pts3d, np.float64, copy=True)
    if pts.ndim < 2 or pts.shape[-2] != 3:
        raise ValueError(f"points must be (..., 3, K), got {pts.shape}")
    sx, sy, kx, ky = _split_roi(roi, size)
    x, y, z = pts[..., 0, :] - 1, size - pts[..., 1, :], pts[..., 2, :] - 1
    z = z * (kx + ky) / 2
    return np.stack([x * kx + sx, y * ky + sy, z - z.min(-1, keepdims=True)], -2)
