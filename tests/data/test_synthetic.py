import numpy as np
import pytest

from qlspec.data.faceset import FaceSet
from qlspec.data.synthetic import render_synthetic
from qlspec.face.morphable import synthetic_face_model
from qlspec.face.pose import yaw_deg


@pytest.fixture(scope="module")
def small():
    return render_synthetic(24, seed=7, workers=1)


def test_shapes_dtypes_and_conventions(small):
    assert small.images.shape == (24, 120, 120, 3) and small.images.dtype == np.uint8
    assert small.params.shape == (24, 62) and small.landmarks.shape == (24, 2, 68)
    # landmarks are the model's projection of the stored parameters, y down
    lm = synthetic_face_model().landmarks(small.params.astype(np.float64))[:, :2]
    np.testing.assert_allclose(small.landmarks, lm, atol=1e-3)
    assert np.all(small.landmarks[:, 1, 8] > small.landmarks[:, 1, 27])  # chin below nose bridge (|roll| <= 30)
    box = small.landmarks.max(2) - small.landmarks.min(2)
    assert np.all((box.max(1) > 0.57 * 120) & (box.max(1) < 0.76 * 120))
    np.testing.assert_allclose(small.yaw_deg, yaw_deg(small.params), atol=1e-3)


def test_same_seed_same_bytes_any_worker_count(small):
    again = render_synthetic(24, seed=7, workers=2)
    assert again.images.tobytes() == small.images.tobytes()
    assert again.params.tobytes() == small.params.tobytes()
    prefix = render_synthetic(5, seed=7, workers=1)
    assert prefix.images.tobytes() == small.images[:5].tobytes()


def test_different_seed_differs(small):
    other = render_synthetic(4, seed=8, workers=1)
    assert other.images.tobytes() != small.images[:4].tobytes()
    assert not np.allclose(other.params, small.params[:4])


def test_images_are_not_flat(small):
    assert small.images.reshape(24, -1).std(1).min() > 10


def test_progress_counts_every_image():
    seen = []
    render_synthetic(12, seed=1, workers=1, progress=seen.append)
    assert sum(seen) == 12


def test_yaw_distribution_reaches_profile():
    from qlspec.data.synthetic import sample_params

    model = synthetic_face_model()
    params = np.stack([sample_params(np.random.default_rng([3, i]), model) for i in range(600)])
    yaw = np.abs(yaw_deg(params))
    assert yaw.max() <= 90.0 and yaw.max() > 80.0
    share = [np.mean(yaw <= 30), np.mean((yaw > 30) & (yaw <= 60)), np.mean(yaw > 60)]
    assert 0.3 < share[0] < 0.5 and 0.3 < share[1] < 0.5 and 0.12 < share[2] < 0.28
    assert np.abs(params[:, 52:62]).max() > 0.5 and params[:, 12:52].std(0)[0] > 1.5


def test_faceset_save_load_round_trip(tmp_path, small):
    small.save(tmp_path / "set.npz")
    back = FaceSet.load(tmp_path / "set.npz")
    for name in ("images", "params", "landmarks", "yaw_deg"):
        np.testing.assert_array_equal(getattr(back, name), getattr(small, name))
    assert not (tmp_path / "set.npz.tmp").exists()


def test_faceset_rejects_wrong_dtypes(small):
    with pytest.raises(ValueError):
        FaceSet(small.images.astype(np.float32), small.params, small.landmarks, small.yaw_deg)
