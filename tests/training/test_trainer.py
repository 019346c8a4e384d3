import numpy as np
import pytest
import torch

from qlspec.data.synthetic import render_synthetic
from qlspec.errors import CheckpointError
from qlspec.face.morphable import synthetic_face_model
from qlspec.face.params import ParamStats
from qlspec.metrics.nme import nme_per_image
from qlspec.nets.mobilenet_v1 import MobileNetV1
from qlspec.training.loss import FaceLoss, LossConfig
from qlspec.training.trainer import CHECKPOINT_NAME, predict, train


class Stop(Exception):
    pass


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    # 64x64 crops keep these tests fast; the net and loop do not depend on the crop size.
    tr = render_synthetic(32, seed=11, size=64, workers=1)
    va = render_synthetic(8, seed=12, size=64, workers=1)
    return tr, va, ParamStats.from_params(tr.params)


def _net(seed=0):
    torch.manual_seed(seed)
    return MobileNetV1(0.25)


def _run(data, ckpt, epochs=3, **kw):
    tr, va, stats = data
    args = dict(stats=stats, epochs=epochs, batch_size=8, lr=0.02, loss_cfg=LossConfig(1.0, 10.0), ckpt_dir=ckpt, seed=5)
    args.update(kw)
    net = kw.pop("net", None) or _net()
    args.pop("net", None)
    return net, train(net, tr, va, **args)


def test_loss_decreases(data, tmp_path):
    net, res = _run(data, tmp_path, epochs=4, optimizer="adam", lr=2e-3)
    losses = [h["loss"] for h in res.history]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert res.resumed_from == 0 and (tmp_path / CHECKPOINT_NAME).exists()
    assert not net.training and 0 < res.val.mean < 1


def test_resume_after_interruption_gives_identical_weights(data, tmp_path):
    full, _ = _run(data, tmp_path / "a")

    def boom(epoch, net):
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        _run(data, tmp_path / "b", on_epoch_start=boom)
    state = torch.load(tmp_path / "b" / CHECKPOINT_NAME, weights_only=True)
    assert state["epoch"] == 2 and len(state["history"]) == 2

    seen = []
    resumed, res = _run(data, tmp_path / "b", net=_net(seed=99), on_epoch_start=lambda e, n: seen.append(e))
    assert seen == [2] and res.resumed_from == 2 and len(res.history) == 3
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k

    # a finished run is a no-op that returns the stored history
    _, res2 = _run(data, tmp_path / "b", on_epoch_start=lambda e, n: seen.append(e))
    assert seen == [2] and res2.resumed_from == 3 and res2.history == res.history


def test_resume_refuses_other_settings(data, tmp_path):
    _run(data, tmp_path, epochs=1)
    with pytest.raises(CheckpointError, match="lr"):
        _run(data, tmp_path, epochs=1, lr=0.5)


def test_corrupt_checkpoint_is_a_clear_error(data, tmp_path):
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        _run(data, tmp_path, epochs=1)


def test_hooks_and_parameter_groups(data, tmp_path):
    calls = []
    net = _net()
    conv_before = net.conv1.weight.detach().clone()
    _run(
        data,
        tmp_path,
        epochs=2,
        net=net,
        params_for_optimiser=[{"params": net.fc.parameters()}],
        on_epoch_start=lambda e, n: calls.append(("start", e, n is net)),
        on_validation_start=lambda e, n: calls.append(("val", e, n.training)),
    )
    assert calls == [("start", 0, True), ("val", 0, True), ("start", 1, True), ("val", 1, True)]
    assert torch.equal(net.conv1.weight, conv_before)


def test_progress_bar_runs(data, tmp_path):
    _, res = _run(data, tmp_path, epochs=1, progress=True, schedule="step", warmup_epochs=0.5)
    assert len(res.history) == 1


def test_predict_shapes_and_landmarks(data):
    _, va, stats = data
    params, lmk = predict(_net(), va, stats, batch_size=3)
    assert params.shape == (8, 62) and lmk.shape == (8, 2, 68) and params.dtype == np.float32
    np.testing.assert_allclose(lmk, synthetic_face_model().landmarks(params.astype(np.float64))[:, :2], atol=1e-3)


def test_landmark_loss_is_the_nme(data):
    _, va, stats = data
    model = synthetic_face_model()
    z_gt = torch.tensor(stats.normalise(va.params.astype(np.float64)))
    z_pred = z_gt + 0.3 * torch.randn(z_gt.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    _, parts = FaceLoss(model, stats, LossConfig(1.0, 1.0, "nme"))(z_pred, z_gt)
    pred = model.landmarks(stats.denormalise(z_pred.numpy()))
    want = nme_per_image(pred, model.landmarks(va.params.astype(np.float64))).mean()
    np.testing.assert_allclose(parts["landmark"].item(), want, rtol=1e-6)
    np.testing.assert_allclose(parts["param"].item(), ((z_pred - z_gt) ** 2).mean().item())
    total, _ = FaceLoss(model, stats, LossConfig(0.0, 1.0, "vdc"))(z_pred, z_gt)
    assert total.item() > 0
