"""3DDFA ROI policies, crop with zero fill, the INTER_LINEAR emulation and point mapping."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qlspec.data.crop import (
    crop_image,
    from_crop,
    resize_bilinear,
    roi_from_box,
    roi_from_landmarks,
    round_roi,
    similar_transform,
    to_crop,
)
from qlspec.errors import QlspecError
from qlspec.face.morphable import FaceModel


def test_roi_from_landmarks_by_hand():
    pts = np.array([[10.0, 50.0, 30.0], [20.0, 40.0, 25.0]])  # box x 10..50, y 20..40
    half = 40 * math.sqrt(2) / 2
    np.testing.assert_allclose(roi_from_landmarks(pts), [30 - half, 30 - half, 30 + half, 30 + half])
    np.testing.assert_allclose(roi_from_landmarks(np.vstack([pts, np.ones((1, 3))])), roi_from_landmarks(pts))


def test_roi_from_box_by_hand():
    # old_size (100 + 120) / 2 = 110; centre (60, 80 + 0.14 * 110 = 95.4); side int(173.8) = 173
    np.testing.assert_allclose(roi_from_box([10, 20, 110, 140, 0.99]), [-26.5, 8.9, 146.5, 181.9])
    np.testing.assert_allclose(roi_from_box([0, 0, 10, 10], scale=2.0, shift=0.0), [-5, -5, 15, 15])


def test_round_roi_is_python_round():
    assert round_roi([-26.5, 8.9, 146.5, 181.9]).tolist() == [-26.0, 9.0, 146.0, 182.0]  # half to even
    assert round_roi([0.5, 1.5, 2.5, 3.5]).tolist() == [0.0, 2.0, 2.0, 4.0]


def test_crop_zero_fills_outside_the_image():
    img = np.arange(10 * 10 * 3, dtype=np.uint8).reshape(10, 10, 3)
    out = crop_image(img, [-2, -3, 8, 7], size=10)  # 10 x 10 crop: copied, not resampled
    assert out.shape == (10, 10, 3) and out.dtype == np.uint8
    assert np.array_equal(out[3:, 2:], img[:7, :8])
    assert not out[:3].any() and not out[:, :2].any()
    far = crop_image(img, [100, 100, 110, 110], size=10)
    assert not far.any()
    with pytest.raises(QlspecError, match="empty crop box"):
        crop_image(img, [5, 5, 5.2, 5.2])


def test_crop_then_resize_matches_manual_cut():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
    roi = [5.4, 7.6, 45.4, 47.6]  # rounds to [5, 8, 45, 48]
    assert np.array_equal(crop_image(img, roi, size=20), resize_bilinear(img[8:48, 5:45], 20, 20))


def test_resize_known_opencv_values():
    row = np.array([[0, 255]], np.uint8)
    assert resize_bilinear(row, 1, 4).tolist() == [[0, 64, 191, 255]]
    img = np.full((7, 9, 3), 173, np.uint8)
    assert (resize_bilinear(img, 120, 120) == 173).all()
    assert (resize_bilinear(img, 3, 2) == 173).all()


def _float_bilinear(img: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """Half-pixel bilinear with edge replication in float64 (the real-valued semantics)."""
    h, w = img.shape[:2]
    out = np.zeros((oh, ow) + img.shape[2:])
    for dy in range(oh):
        fy = min(max((dy + 0.5) * h / oh - 0.5, 0.0), h - 1.0)
        y0 = math.floor(fy)
        y1, ay = min(y0 + 1, h - 1), fy - y0
        for dx in range(ow):
            fx = min(max((dx + 0.5) * w / ow - 0.5, 0.0), w - 1.0)
            x0 = math.floor(fx)
            x1, ax = min(x0 + 1, w - 1), fx - x0
            top = img[y0, x0] * (1 - ax) + img[y0, x1] * ax
            bottom = img[y1, x0] * (1 - ax) + img[y1, x1] * ax
            out[dy, dx] = top * (1 - ay) + bottom * ay
    return out


@pytest.mark.parametrize("shape,out", [((37, 53, 3), (24, 24)), ((12, 9, 3), (30, 20)), ((120, 120), (50, 70))])
def test_resize_within_one_level_of_real_bilinear(shape, out):
    img = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    got = resize_bilinear(img, *out).astype(np.float64)
    assert got.shape == out + shape[2:]
    assert np.abs(got - _float_bilinear(img.astype(np.float64), *out)).max() <= 1.0


def test_to_crop_from_crop_round_trip_and_hand_values():
    roi = [10, 20, 70, 80]  # 60 px -> 120: scale 0.5
    pts = np.array([[10.0, 40.0], [20.0, 50.0], [3.0, 4.0]])
    crop = to_crop(pts, roi)
    np.testing.assert_allclose(crop, [[0, 60], [0, 60], [3, 4]])
    np.testing.assert_allclose(from_crop(crop, roi), pts)
    batch = np.random.default_rng(2).uniform(0, 120, (5, 2, 68))
    np.testing.assert_allclose(to_crop(from_crop(batch, [-3.5, 7, 200, 210.5]), [-3.5, 7, 200, 210.5]), batch)


def test_similar_transform_v2_by_hand():
    roi = [10, 20, 70, 80]
    pts3d = np.array([[1.0, 121.0], [120.0, 0.0], [1.0, 5.0]])
    got = similar_transform(pts3d, roi)
    # x: (1 - 1) * 0.5 + 10 = 10, (121 - 1) * 0.5 + 10 = 70; y: (120 - 120) * 0.5 + 20 = 20, 120 * 0.5 + 20 = 80
    np.testing.assert_allclose(got, [[10, 70], [20, 80], [0, 2]])  # z: (0, 4) * 0.5, minus min


def test_similar_transform_equals_model_frame_then_from_crop():
    """FaceModel(frame='3ddfa') + from_crop == V2 similar_transform on the raw reconstruction (x, y)."""
    rng = np.random.default_rng(3)
    u, ws, we = rng.normal(0, 50, 204), rng.normal(0, 1, (204, 40)), rng.normal(0, 1, (204, 10))
    raw = FaceModel(u=u, w_shp=ws, w_exp=we, keypoints=np.arange(204), frame="pixel")
    v2 = FaceModel(u=u, w_shp=ws, w_exp=we, keypoints=np.arange(204), frame="3ddfa")
    p = rng.normal(0, 0.5, (3, 62))
    roi = [-12.0, 30.0, 190.0, 232.0]
    want = np.stack([similar_transform(q, roi)[:2] for q in raw.landmarks(p)])
    np.testing.assert_allclose(from_crop(v2.landmarks(p)[:, :2], roi), want, atol=1e-9)
