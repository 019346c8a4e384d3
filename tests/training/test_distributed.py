"""Two gloo processes on the CPU train what one process trains (float and PACT QAT), every process ends with
the same quantiser, PTQ calibration pooled over processes equals one process's, and checkpoints move
between process counts.

One 2-process launch (`_in_each_process`) runs every scenario, each process saving what it ended
with; the tests compare those files with one process's runs here. Tolerance: the same global batches
summed in two halves instead of one differ by float32 rounding (about 1e-7 relative per step), which
a few SGD steps keep far below ``ATOL``/``RTOL``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from qlspec.data.synthetic import render_synthetic
from qlspec.face.params import ParamStats
from qlspec.nets.mobilenet_v1 import MobileNetV1
from qlspec.quant import PACTController, QuantConfig, calibrate, clip_parameters, float_to_fake, pact_param_groups
from qlspec.spec.models import Distributed
from qlspec.training.distributed import all_gather_cat, all_reduce_, launch, world
from qlspec.training.loss import LossConfig
from qlspec.training.trainer import CHECKPOINT_NAME, train

ATOL, RTOL = 1e-6, 1e-6  # float64 parameters moving by ~0.5 in 4 steps; seen: 2.4e-8
# QAT is discontinuous: a channel whose input is constant normalises to exactly 0 in one process and to
# +-1e-15 (the two-part sum's rounding) in two, and the sign decides whether PACT's straight-through
# gradient reaches it (seen: one batch-norm bias of 128 off by 2e-3 after 2 steps). So the learned
# bounds must agree to 1e-9, and the other QAT parameters element by element within 1e-6 but for at
# most 0.1% of them.
QAT_BOUNDS_ATOL, QAT_ATOL, QAT_OUTLIERS = 1e-9, 1e-6, 1e-3
BATCH, EPOCHS = 8, 2  # 16 training images: 2 steps per epoch, 4 images per process and step

pytestmark = pytest.mark.usefixtures("one_thread")


class Stop(Exception):
    pass


def _data():
    tr = render_synthetic(16, seed=21, size=48, workers=1)
    va = render_synthetic(4, seed=22, size=48, workers=1)
    return tr, va, ParamStats.from_params(tr.params)


class Float64(nn.Module):
    """`net` in float64 (inputs cast on the way in): float32 rounding in this tiny net, amplified by
    batch-norm channels of almost no variance, differs by ~0.4% from the exact gradient for one process
    as for two; in float64 what is left is the algorithm's own difference."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.double())


def _float32_net() -> nn.Module:
    torch.manual_seed(0)
    return MobileNetV1(0.25)


def _net() -> nn.Module:
    return Float64(_float32_net())


def _train(net, data, ckpt: Path, **kw):
    tr, va, stats = data
    args = dict(stats=stats, epochs=EPOCHS, batch_size=BATCH, lr=0.02, loss_cfg=LossConfig(1.0, 10.0), ckpt_dir=ckpt, seed=3)
    return train(net, tr, va, **{**args, **kw})


def _calibration(data) -> list[torch.Tensor]:
    from qlspec.preprocess import DEFAULT

    return [DEFAULT(data[0].images[i : i + 4]) for i in (0, 4)]


def _qat(data, ckpt: Path) -> nn.Module:
    """PACT from the initial float net: percentile-initialised learned bounds, frozen before epoch 1."""
    w = world()
    fq = Float64(float_to_fake(_float32_net().eval(), QuantConfig(act_init="percentile", percentile=99.0), _calibration(data)[0]))
    controller = PACTController(fq, start_epoch=0, freeze_clip_at=1, calibration_batches=_calibration(data)[w.rank :: w.size])
    _train(
        fq,
        data,
        ckpt,
        batch_size=16,
        lr=1e-3,
        params_for_optimiser=pact_param_groups(fq, 1e-3),
        on_epoch_start=lambda e, n: controller(e, n),
    )
    return fq


def _ptq(data) -> dict[str, tuple[float, float]]:
    w = world()
    fq = float_to_fake(_float32_net().eval(), QuantConfig(fold_bn=True), _calibration(data)[0])
    return calibrate(fq, _calibration(data)[w.rank :: w.size], method="percentile", percentile=99.0)


def _stop_at(epoch: int):
    def hook(e, net):
        if e == epoch:
            raise Stop

    return hook


def _in_each_process(folder: Path) -> str:
    """Every scenario, in each of the 2 processes; each saves its results as rank<r>.pt."""
    torch.set_num_threads(1)
    w = world()
    data = _data()
    out: dict[str, object] = {"world": (w.rank, w.size)}
    times = [time.perf_counter()]
    try:  # interrupted after epoch 1; a copy of its checkpoint is resumed by one process in the test
        _train(_net(), data, folder / "float", on_epoch_start=_stop_at(1))
    except Stop:
        pass
    if w.is_main:
        shutil.copytree(folder / "float", folder / "partial")
    net = _net()
    out["float_resumed_from"] = _train(net, data, folder / "float").resumed_from
    out["float"] = net.state_dict()
    times.append(time.perf_counter())
    resumed = _net()  # a checkpoint one process wrote after epoch 1
    out["resumed_from"] = _train(resumed, data, folder / "from-one").resumed_from
    out["resumed"] = resumed.state_dict()
    times.append(time.perf_counter())
    fq = _qat(data, folder / "qat")
    out["qat"] = fq.state_dict()
    out["qat_requires_grad"] = [p.requires_grad for p in clip_parameters(fq)]
    out["ptq"] = _ptq(data)
    out["gathered"] = all_gather_cat(torch.arange(w.rank + 1, dtype=torch.float32))
    out["max"] = all_reduce_(torch.tensor([float(w.rank)]), "max")
    times.append(time.perf_counter())
    out["times"] = times
    torch.save(out, folder / f"rank{w.rank}.pt")
    return "rank 0 value"


def _prefixed(key: str) -> Callable[[str], str]:
    return lambda message: f"{key}: {message}"


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = ATOL) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=RTOL, msg=_prefixed(k))
        else:
            assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """The 2-process run and the 1-process references it is compared with."""
    folder = tmp_path_factory.mktemp("dist")
    data = _data()
    try:
        _train(_net(), data, folder / "from-one", on_epoch_start=_stop_at(1))
    except Stop:
        pass
    returned = launch(_in_each_process, folder, Distributed(processes=2, backend="gloo"), timeout_s=120)
    ranks = [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    one = _net()
    _train(one, data, folder / "one")
    return {"folder": folder, "data": data, "returned": returned, "ranks": ranks, "float": one.state_dict()}


def test_launch_runs_every_rank_and_returns_rank_0s_value(two):
    assert two["returned"] == "rank 0 value"
    assert [r["world"] for r in two["ranks"]] == [(0, 2), (1, 2)]
    for r in two["ranks"]:
        assert r["gathered"].tolist() == [0.0, 0.0, 1.0] and r["max"].item() == 1.0


def test_two_processes_train_what_one_process_trains(two):
    rank0, rank1 = two["ranks"]
    _close(two["float"], rank0["float"])
    for k, v in rank0["float"].items():  # every process ends with the same weights and statistics
        assert torch.equal(v, rank1["float"][k]), k
    moved = max((two["float"][k] - _net().state_dict()[k]).abs().max().item() for k in two["float"] if "weight" in k)
    assert moved > 100 * ATOL  # training did move the weights: the comparison is not vacuous


def test_qat_bounds_and_weights_match_one_process_and_agree_across_processes(two, tmp_path):
    rank0, rank1 = two["ranks"]
    one = _qat(two["data"], tmp_path)
    a, b = one.state_dict(), rank0["qat"]
    assert a.keys() == b.keys()
    bounds = [k for k in a if k.endswith(("clip_hi", "clip_lo"))]
    for k in bounds:
        torch.testing.assert_close(a[k], b[k], atol=QAT_BOUNDS_ATOL, rtol=0, msg=_prefixed(k))
    floats = [k for k in a if a[k].is_floating_point() and k not in bounds]
    off = sum(int(((a[k] - b[k]).abs() > QAT_ATOL + RTOL * b[k].abs()).sum()) for k in floats)
    assert off <= QAT_OUTLIERS * sum(a[k].numel() for k in floats), off
    for k, v in rank0["qat"].items():
        assert torch.equal(v, rank1["qat"][k]), k
    assert rank0["qat_requires_grad"] == [False] * len(rank0["qat_requires_grad"])  # frozen at epoch 1 in every process
    learned = [k for k in bounds if k.endswith("clip_hi")]
    assert learned and any(rank0["qat"][k].item() != 6.0 for k in learned)  # percentile-initialised, not the default


def test_ptq_calibration_pooled_over_processes_equals_one_process(two):
    rank0, rank1 = two["ranks"]
    one = _ptq(two["data"])
    assert rank0["ptq"] == rank1["ptq"] == one


def test_a_two_process_checkpoint_resumes_in_one_process_and_back(two, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(two["folder"] / "partial", partial)
    assert torch.load(partial / CHECKPOINT_NAME, weights_only=True)["epoch"] == 1
    net = _net()
    res = _train(net, two["data"], partial)
    assert res.resumed_from == 1 and len(res.history) == EPOCHS
    _close(two["float"], net.state_dict())
    rank0 = two["ranks"][0]
    assert rank0["resumed_from"] == 1  # and a 1-process checkpoint resumed in 2 processes:
    _close(two["float"], rank0["resumed"])
