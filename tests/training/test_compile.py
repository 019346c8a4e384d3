"""How the trainer runs: ``training.compile`` and the memory format of its batches.

Compiled training steps give eager's keys and, up to float noise, its weights, for the float net and a
QAT net; a net that fails to compile trains eagerly, bit-exactly. channels_last training (CUDA's
``precision: auto``) gives the default format's weights up to float noise; a net with a strided 1x1
convolution trains on contiguous NCHW batches on a CPU, where channels_last crashed oneDNN."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from qlspec.data.synthetic import render_synthetic
from qlspec.face.params import ParamStats
from qlspec.quant import PACTController, QuantConfig, float_to_fake, pact_param_groups
from qlspec.spec.effects import effect_of, keyed
from qlspec.spec.models import Training
from qlspec.training import trainer
from qlspec.training.hardware import Hardware
from qlspec.training.loss import LossConfig
from qlspec.training.trainer import CHECKPOINT_NAME, train

pytestmark = pytest.mark.usefixtures("one_thread")

# Two SGD steps from the same weights: eager and inductor differ only in the order of float32 sums
# (fused kernels). Measured: at most 6e-8 apart, on updates of 4e-4..2e-2 and weights up to 6.
ATOL, RTOL = 1e-6, 1e-5


@pytest.fixture(scope="module")
def data():
    tr = render_synthetic(16, seed=11, size=32, workers=1)
    va = render_synthetic(4, seed=12, size=32, workers=1)
    return tr, va, ParamStats.from_params(tr.params)


class _Tiny(nn.Module):
    """Two conv-bn-relu blocks and a linear head: compiles in seconds (half a minute with a cold inductor cache)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(8, 62)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _float_net() -> nn.Module:
    torch.manual_seed(0)
    return _Tiny()


def _qat_net() -> nn.Module:
    torch.manual_seed(0)
    fq = float_to_fake(_Tiny().eval(), QuantConfig(), torch.zeros(2, 3, 32, 32))
    PACTController(fq, start_epoch=0)(0, fq)  # quantised from the first step, bounds learned
    return fq


def _train(data, ckpt, net: nn.Module, compile: bool, qat: bool = False, channels_last: bool = False) -> dict[str, torch.Tensor]:
    tr, va, stats = data
    train(
        net, tr, va, stats=stats, epochs=1, batch_size=8, lr=0.02, loss_cfg=LossConfig(1.0, 10.0), ckpt_dir=ckpt, seed=5,
        hardware=Hardware(device=torch.device("cpu"), compile=compile, channels_last=channels_last),
        params_for_optimiser=pact_param_groups(net, 0.02) if qat else None,
    )  # fmt: skip
    return torch.load(ckpt / CHECKPOINT_NAME, weights_only=True)["model"]


def _assert_close(eager: dict[str, torch.Tensor], compiled: dict[str, torch.Tensor], exact: bool = False) -> None:
    assert list(compiled) == list(eager)  # same keys, same order: no `_orig_mod.` prefix
    for k, v in eager.items():
        if exact or not v.is_floating_point():
            assert torch.equal(compiled[k], v), k
        else:
            torch.testing.assert_close(compiled[k], v, atol=ATOL, rtol=RTOL, msg=k)


def test_compile_is_a_speed_field():
    assert effect_of("training.compile") == "speed" and not keyed("training.compile")
    assert Hardware.from_spec(Training(device="cpu", compile=True), "qat").compile
    assert not Hardware.from_spec(Training(device="cpu"), "float").compile


@pytest.mark.parametrize("qat", [False, True], ids=["float", "qat"])
def test_compiled_training_gives_eager_keys_and_weights(data, tmp_path, qat):
    make = _qat_net if qat else _float_net
    eager = _train(data, tmp_path / "eager", make(), compile=False, qat=qat)
    net = make()
    compiled = _train(data, tmp_path / "compiled", net, compile=True, qat=qat)
    _assert_close(eager, compiled)
    assert list(net.state_dict()) == list(eager)  # the net itself (evaluated, saved by the stages) too


def test_a_net_that_fails_to_compile_trains_eagerly_and_bit_exactly(data, tmp_path, monkeypatch, caplog):
    def backend(gm: torch.fx.GraphModule, example_inputs):
        def run(*args):
            gm(*args)  # moves the batch-norm statistics, then fails: they must be put back
            raise RuntimeError("no compiler today\nsecond line")

        return run

    monkeypatch.setattr(trainer, "_compiled", lambda net: torch.compile(net, backend=backend))
    eager = _train(data, tmp_path / "eager", _float_net(), compile=False)
    with caplog.at_level(logging.WARNING, logger="qlspec.training.trainer"):
        fallback = _train(data, tmp_path / "fallback", _float_net(), compile=True)
    _assert_close(eager, fallback, exact=True)
    said = [r.getMessage() for r in caplog.records if r.name == "qlspec.training.trainer"]
    assert len(said) == 1 and "training eagerly" in said[0] and "no compiler today" in said[0] and "second line" not in said[0]


class _Downsampling(nn.Module):
    """A residual network's strided 1x1 shortcut, 4 -> 8 channels at 64x64: oneDNN's AVX-512 kernel crashed on it."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1, bias=False), nn.Upsample(scale_factor=2))
        self.down = nn.Conv2d(4, 8, 1, 2, bias=False)
        self.head = nn.Linear(8, 62)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.down(self.stem(x)).mean((2, 3)))


def test_a_net_with_a_strided_pointwise_convolution_trains_on_nchw_batches_on_cpu(data, tmp_path):
    assert trainer.channels_last_safe(_float_net(), torch.device("cpu"))
    torch.manual_seed(0)
    net = _Downsampling()
    assert not trainer.channels_last_safe(net, torch.device("cpu")) and trainer.channels_last_safe(net, torch.device("cuda"))
    _train(data, tmp_path, net, compile=False)  # on the transform's channels_last batches it crashed this process (AVX-512 Xeon)
    assert net.down.weight.is_contiguous()
