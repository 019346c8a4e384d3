"""300W-LP and AFLW2000-3D loaders on tiny files written in those exact formats."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
from realdata_fakes import H, write_300wlp, write_aflw2000, write_text_basis

from qlspec.data.crop import from_crop, roi_from_landmarks, round_roi, to_crop
from qlspec.data.real import load_300wlp, load_aflw2000, pose_in_crop, read_300wlp, read_aflw2000, rotation_3ddfa
from qlspec.errors import QlspecError
from qlspec.face.bfm import load_bfm
from qlspec.face.pose import yaw_pitch_roll


def test_300wlp_shapes_dtypes_and_crop(tmp_path):
    fits = write_300wlp(tmp_path / "300W_LP", n=3)
    got = read_300wlp(tmp_path / "300W_LP")
    faces = got.faces
    assert len(faces) == 3 and faces.images.shape == (3, 120, 120, 3) and faces.images.dtype == np.uint8
    assert faces.params.dtype == np.float32 and faces.params.shape == (3, 62)
    assert faces.landmarks.dtype == np.float32 and faces.landmarks.shape == (3, 2, 68)
    assert faces.yaw_deg.dtype == np.float32 and faces.yaw_deg.shape == (3,)
    # sorted relative paths: AFW/000, AFW/002, HELEN/001; landmarks/ (no images) ignored
    assert got.names == ("AFW/image_000.jpg", "AFW/image_002.jpg", "HELEN/image_001.jpg")
    order = [0, 2, 1]
    for i, k in enumerate(order):
        roi = round_roi(roi_from_landmarks(fits[k]["pt2d"]))
        assert np.array_equal(got.rois[i], roi)
        np.testing.assert_allclose(faces.landmarks[i], to_crop(fits[k]["pt2d"], roi), atol=1e-4)
        np.testing.assert_allclose(faces.yaw_deg[i], np.degrees(fits[k]["pose"][1]), rtol=1e-6)
        np.testing.assert_allclose(faces.params[i, 12:52], fits[k]["shape"][:40], rtol=1e-6)
        np.testing.assert_allclose(faces.params[i, 52:62], fits[k]["exp"][:10], rtol=1e-6)
    assert len(load_300wlp(tmp_path / "300W_LP", limit=2)) == 2


def test_300wlp_params_reproduce_pt2d_through_the_users_basis(tmp_path):
    """Params in the crop frame + the user's basis (frame '3ddfa') land on the image-frame fit's points."""
    write_300wlp(tmp_path / "d", n=4)
    basis = load_bfm(write_text_basis(tmp_path / "basis"))
    got = read_300wlp(tmp_path / "d")
    model_pts = basis.landmarks(got.faces.params.astype(np.float64))[:, :2]
    np.testing.assert_allclose(model_pts, got.faces.landmarks, atol=2e-3)
    via_model = load_300wlp(tmp_path / "d", bfm_basis=basis, landmarks="model")
    np.testing.assert_allclose(via_model.landmarks, got.faces.landmarks, atol=2e-3)
    with pytest.raises(QlspecError, match="needs the user's BFM"):
        load_300wlp(tmp_path / "d", landmarks="model")


def test_pose_in_crop_by_formula():
    """Independent check of the docstring: similar_transform(P_c @ v) == (q_x - 1, H - q_y)."""
    rng = np.random.default_rng(5)
    pose = np.array([0.1, -0.7, 0.05, 81.0, 92.0, 3.0, 0.6])
    roi = np.array([-7.0, 12.0, 150.0, 169.0])  # square, as a rounded ROI usually is
    v = rng.normal(0, 60, (3, 10))
    q = pose[6] * rotation_3ddfa(*pose[:3]) @ v + pose[3:6, None]
    p = pose_in_crop(pose, roi, image_height=H)
    c = p[:, :3] @ v + p[:, 3:]
    k = (roi[2] - roi[0]) / 120
    img = from_crop(np.stack([c[0] - 1, 120 - c[1]]), roi)
    np.testing.assert_allclose(img, np.stack([q[0] - 1, H - q[1]]), atol=1e-9)
    # R is a scaled rotation: rows of equal norm f / k, orthogonal; yaw-only pose -> asin(R[2,0]) = yaw
    r = p[:, :3]
    np.testing.assert_allclose(r @ r.T, np.eye(3) * (pose[6] / k) ** 2, atol=1e-9)
    yaw_only = pose_in_crop(np.array([0, 0.5, 0, 80, 90, 0, 0.6]), roi, H)
    params = np.concatenate([yaw_only.reshape(-1), np.zeros(50)])[None]
    assert yaw_pitch_roll(params)[0, 0] == pytest.approx(np.degrees(0.5))


def test_images_are_bgr(tmp_path):
    write_300wlp(tmp_path / "d", n=1, colour=(230, 20, 10))  # RGB red
    img = load_300wlp(tmp_path / "d").images[0]
    centre = img[50:70, 50:70].reshape(-1, 3).mean(0)
    assert centre[2] > 200 and centre[0] < 40  # BGR: red in channel 2


def test_aflw2000_shapes_nan_params_and_yaw(tmp_path):
    fits = write_aflw2000(tmp_path / "AFLW2000", n=3, with_params=(1,))
    got = read_aflw2000(tmp_path / "AFLW2000")
    f = got.faces
    assert f.images.shape == (3, 120, 120, 3) and f.params.shape == (3, 62) and f.params.dtype == np.float32
    assert np.isnan(f.params[0]).all() and np.isnan(f.params[2]).all() and np.isfinite(f.params[1]).all()
    for i in range(3):
        roi = round_roi(roi_from_landmarks(fits[i]["pt2d"]))
        np.testing.assert_allclose(f.landmarks[i], to_crop(fits[i]["pt2d"], roi), atol=1e-4)
        assert f.yaw_deg[i] == pytest.approx(np.degrees(fits[i]["pose"][1]), rel=1e-6)
    # mapping GT back with the stored ROI recovers the original annotation (3DDFA's benchmark frame)
    np.testing.assert_allclose(from_crop(f.landmarks[0], got.rois[0]), fits[0]["pt2d"], atol=1e-3)
    assert len(load_aflw2000(tmp_path / "AFLW2000", limit=1)) == 1


def test_errors_name_file_and_key(tmp_path):
    with pytest.raises(QlspecError, match="data folder not found") as e:
        load_aflw2000(tmp_path / "missing")
    assert e.value.where == str(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(QlspecError, match="no images"):
        load_aflw2000(tmp_path / "empty")
    write_300wlp(tmp_path / "nokey", n=1, skip_key="Exp_Para")
    with pytest.raises(QlspecError, match="missing key 'Exp_Para'") as e:
        load_300wlp(tmp_path / "nokey")
    assert e.value.where == str(tmp_path / "nokey" / "AFW" / "image_000.mat")
    write_aflw2000(tmp_path / "a", n=1)
    scipy.io.savemat(tmp_path / "a" / "image00000.mat", {"pt3d_68": np.zeros((2, 68)), "Pose_Para": np.zeros((1, 7))})
    with pytest.raises(QlspecError, match=r"'pt3d_68': expected shape \(3, 68\)") as e:
        load_aflw2000(tmp_path / "a")
    assert e.value.where.endswith("image00000.mat")
    (tmp_path / "a" / "image00000.mat").unlink()
    with pytest.raises(QlspecError, match="no image00000.mat beside the image") as e:
        load_aflw2000(tmp_path / "a")
    assert e.value.where.endswith("image00000.jpg")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_bytes(b"not a jpeg")
    scipy.io.savemat(tmp_path / "bad" / "x.mat", {"pt3d_68": np.zeros((3, 68)), "Pose_Para": np.zeros((1, 7))})
    with pytest.raises(QlspecError, match="cannot read image") as e:
        load_aflw2000(tmp_path / "bad")
    assert e.value.where.endswith("x.jpg")
