import numpy as np

from qlspec.face.morphable import synthetic_face_model
from qlspec.metrics.nme import mean_predictor_nme, nme_per_image, nme_report


def _square(n=68, side=10.0):
    gt = np.zeros((1, 2, n))
    gt[0, 0, 1], gt[0, 1, 2] = side, 40.0  # box 10 wide, 40 tall -> sqrt(w*h) = 20
    return gt


def test_nme_hand_checked():
    gt = _square()
    pred = gt.copy()
    pred[0, 0, :] += 3.0
    pred[0, 1, :] += 4.0  # every point 5 px off
    np.testing.assert_allclose(nme_per_image(pred, gt), [5.0 / 20.0])
    pred = gt.copy()
    pred[0, 0, 0] += 68 * 2.0  # one point 136 px off -> mean error 2 px
    np.testing.assert_allclose(nme_per_image(pred, gt), [2.0 / 20.0])


def test_bins_and_means():
    gt = np.repeat(_square(), 4, 0)
    pred = gt.copy()
    pred[:, 0] += np.array([1.0, 2.0, 3.0, 5.0])[:, None]  # NME 0.05, 0.1, 0.15, 0.25
    rep = nme_report(pred, gt, np.array([0.0, -30.0, 30.5, 75.0]))
    assert [b.n for b in rep.bins] == [2, 1, 1]
    np.testing.assert_allclose([b.nme for b in rep.bins], [0.075, 0.15, 0.25])
    np.testing.assert_allclose(rep.mean_of_bins, (0.075 + 0.15 + 0.25) / 3)
    np.testing.assert_allclose(rep.mean, 0.1375)
    first = rep.as_dict()["bins"][0]
    assert first["yaw"] == "[0,30]" and first["n"] == 2 and np.isclose(first["nme"], 0.075)


def test_empty_bin_is_nan_and_skipped():
    gt = _square()
    rep = nme_report(gt + 1.0, gt, np.array([10.0]))
    assert np.isnan(rep.bins[2].nme) and rep.bins[2].n == 0
    np.testing.assert_allclose(rep.mean_of_bins, rep.bins[0].nme)


def test_mean_predictor_is_zero_on_the_mean_face():
    model = synthetic_face_model()
    mean = np.zeros(62)
    mean[:12] = [0.5, 0, 0, 60, 0, 0.5, 0, 60, 0, 0, 0.5, 0]
    gt = model.landmarks(mean[None])[:, :2]
    assert mean_predictor_nme(mean, np.repeat(gt, 3, 0), np.zeros(3), model).mean < 1e-12
