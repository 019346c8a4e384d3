import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qlspec.face.morphable import FaceModel, pose_matrix, synthetic_face_model
from qlspec.face.params import ParamStats
from qlspec.face.pose import scale, yaw_pitch_roll


def _loop_landmarks(model: FaceModel, param: np.ndarray) -> np.ndarray:
    """Independent scalar re-statement of 3DDFA's formula for one (62,) parameter vector."""
    out = np.zeros((3, 68))
    for k in range(68):
        v = np.zeros(3)
        for c in range(3):
            row = model.keypoints[3 * k + c]
            v[c] = (
                model.u[row]
                + sum(model.w_shp[row, i] * param[12 + i] for i in range(40))
                + sum(model.w_exp[row, j] * param[52 + j] for j in range(10))
            )
        for r in range(3):
            out[r, k] = sum(param[4 * r + c] * v[c] for c in range(3)) + param[4 * r + 3]
    return out


def test_synthetic_model_is_deterministic_and_well_formed():
    a, b = synthetic_face_model(), synthetic_face_model.__wrapped__()
    for name in ("u", "w_shp", "w_exp", "keypoints", "tri"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.w_shp.shape[1] == 40 and a.w_exp.shape[1] == 10 and a.keypoints.shape == (204,)
    # shape columns: 1 mm RMS on the landmarks
    lm = a.w_shp[a.keypoints].reshape(68, 3, 40)
    np.testing.assert_allclose(np.sqrt((lm**2).sum(1).mean(0)), 1.0, rtol=1e-9)


def test_landmarks_match_an_independent_loop():
    model = synthetic_face_model()
    rng = np.random.default_rng(0)
    params = rng.normal(size=(3, 62))
    got = model.landmarks(params)
    for i in range(3):
        np.testing.assert_allclose(got[i], _loop_landmarks(model, params[i]), rtol=1e-10, atol=1e-9)


def test_landmarks_torch_matches_numpy_and_has_gradients():
    model = synthetic_face_model()
    p = np.random.default_rng(1).normal(size=(4, 62))
    t = torch.tensor(p, requires_grad=True)
    out = model.landmarks(t)
    np.testing.assert_allclose(out.detach().numpy(), model.landmarks(p), rtol=1e-12)
    out.sum().backward()
    assert t.grad is not None and torch.isfinite(t.grad).all()


def test_identity_pose_places_the_mean_shape():
    model = synthetic_face_model()
    p = np.zeros((1, 62))
    p[0, :12] = [1, 0, 0, 10, 0, 1, 0, 20, 0, 0, 1, 0]
    lm = model.landmarks(p)[0]
    mean = model.u[model.keypoints].reshape(68, 3).T
    np.testing.assert_allclose(lm, mean + [[10], [20], [0]])
    assert lm[1, 8] > lm[1, 30] > lm[1, 27]  # y down: chin below nose tip below bridge


def test_3ddfa_frame_conversion():
    m = synthetic_face_model()
    m3 = FaceModel(m.u, m.w_shp, m.w_exp, m.keypoints, frame="3ddfa", size=120)
    p = np.random.default_rng(2).normal(size=(2, 62))
    a, b = m.landmarks(p), m3.landmarks(p)
    np.testing.assert_allclose(b[:, 0], a[:, 0] - 1)
    np.testing.assert_allclose(b[:, 1], 120 - a[:, 1])


@settings(max_examples=50, deadline=None)
@given(yaw=st.floats(-89, 89), pitch=st.floats(-60, 60), roll=st.floats(-60, 60), s=st.floats(0.1, 3))
def test_pose_round_trip(yaw, pitch, roll, s):
    r = pose_matrix(*np.radians([[yaw], [pitch], [roll]]))
    np.testing.assert_allclose(r[0] @ r[0].T, np.eye(3), atol=1e-12)
    p = np.zeros((1, 62))
    p[0, :12] = np.concatenate([s * r[0], np.ones((3, 1))], 1).reshape(-1)
    got = yaw_pitch_roll(p)[0]
    if abs(yaw) < 86:  # away from 3DDFA's gimbal threshold |R[2,0]| > 0.998
        np.testing.assert_allclose(got, [yaw, pitch, roll], atol=1e-6)
    np.testing.assert_allclose(scale(p), [s])


def test_pose_gimbal_case_reports_90():
    r = pose_matrix(np.radians([89.0]), np.zeros(1), np.zeros(1))
    p = np.zeros((1, 62))
    p[0, :12] = np.concatenate([r[0], np.zeros((3, 1))], 1).reshape(-1)
    assert yaw_pitch_roll(p)[0, 0] == 90.0


def test_param_stats_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    params = rng.normal(5.0, 3.0, size=(100, 62)).astype(np.float32)
    params[:, 11] = 0.0  # a constant coordinate gets std 1
    st_ = ParamStats.from_params(params)
    assert st_.std[11] == 1.0
    z = st_.normalise(params)
    np.testing.assert_allclose(z[:, :11].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(st_.denormalise(z), params, rtol=1e-5, atol=1e-5)
    zt = st_.normalise(torch.tensor(params))
    np.testing.assert_allclose(zt.numpy(), z, rtol=1e-6)
    st_.save(tmp_path / "stats.npz")
    back = ParamStats.load(tmp_path / "stats.npz")
    np.testing.assert_array_equal(back.mean, st_.mean)
    np.testing.assert_array_equal(back.std, st_.std)
