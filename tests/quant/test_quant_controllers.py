"""PACTController switches at the right epochs; frozen bounds stop changing; parameter groups."""

from __future__ import annotations

import pytest
import torch
from quant_toys import TinyMobileNet
from torch import nn

from qlspec.quant import PACTController, QuantConfig, clip_parameters, float_to_fake, pact_param_groups
from qlspec.quant.controllers import activation_quantisers, start_weights, weight_quantisers

X = torch.randn(8, 3, 24, 24).clamp(-1, 127 / 128)


def _fq(**kw) -> nn.Module:
    torch.manual_seed(0)
    return float_to_fake(TinyMobileNet(), QuantConfig(**kw), X)


def _states(fq):
    return [bool(m.started) for m in weight_quantisers(fq)], [bool(m.started) for m in activation_quantisers(fq)]


def _train_step(fq, opt):
    fq.train()
    opt.zero_grad()
    fq(X).square().mean().backward()
    opt.step()


def test_start_and_freeze_happen_at_their_epochs():
    fq = _fq(act_clip=0.5)  # small enough that some activations clip, so the bounds get gradients
    ctrl = PACTController(fq, start_epoch=2, freeze_clip_at=4, act_start_epoch=3)
    opt = torch.optim.SGD(pact_param_groups(fq, lr=0.1, clip_weight_decay=0.0), lr=0.1)
    for epoch in range(6):
        ran = ctrl(epoch, fq)
        w, a = _states(fq)
        assert all(w) == (epoch >= 2) and any(w) == (epoch >= 2)
        assert all(a) == (epoch >= 3) and any(a) == (epoch >= 3)
        assert ran == {2: ["start_weights"], 3: ["start_activations"], 4: ["freeze"]}.get(epoch, [])
        before = [p.detach().clone() for p in clip_parameters(fq)]
        w_before = [m.get_eps_w() for m in weight_quantisers(fq)]
        _train_step(fq, opt)
        after = [p.detach().clone() for p in clip_parameters(fq)]
        w_after = [m.get_eps_w() for m in weight_quantisers(fq)]
        if epoch >= 4:  # frozen: no bound moves, not even weight bounds that tracked the weights
            assert all(torch.equal(b, c) for b, c in zip(before, after))
            assert all(torch.equal(b, c) for b, c in zip(w_before, w_after))
            assert all(p.grad is None for p in clip_parameters(fq))
        elif epoch == 3:  # activation bounds learn (at least one receives a gradient and moves)
            assert any(not torch.equal(b, c) for b, c in zip(before, after))
        if 2 <= epoch < 4:  # weight bounds follow the weights (max init, not learned)
            assert any(not torch.equal(b, c) for b, c in zip(w_before, w_after))
    assert ctrl.log == [(2, "start_weights"), (3, "start_activations"), (4, "freeze")]


def test_resuming_late_catches_up():
    fq = _fq()
    ran = PACTController(fq, start_epoch=0, freeze_clip_at=1)(3, fq)
    assert ran == ["start_weights", "start_activations", "freeze"]
    assert PACTController(fq, start_epoch=0, freeze_clip_at=1)(4, fq) == []


def test_statistics_inits_need_observations():
    fq = _fq(act_init="max")
    with pytest.raises(RuntimeError, match="statistics"):
        PACTController(fq, start_epoch=0)(0, fq)
    fq = _fq(act_init="max")
    PACTController(fq, start_epoch=0, calibration_batches=[X, X])(0, fq)
    relu = fq.get_submodule("relu")
    with torch.no_grad():
        net_float = _fq()
        start_weights(net_float)  # the controller starts the weights first, then observes
        ref = {}
        h = net_float.get_submodule("relu").register_forward_hook(lambda m, i, o: ref.update(max=o.max()))
        net_float.eval()
        net_float(X)
        h.remove()
    assert relu.clip_hi.item() == pytest.approx(ref["max"].item(), rel=1e-5)  # EMA of two equal batches = their max


def test_observing_in_float_epochs_feeds_a_later_start():
    fq = _fq(act_init="std")
    ctrl = PACTController(fq, start_epoch=1)
    ctrl(0, fq)
    fq.train()
    fq(X)  # a float-mode epoch: quantisers record statistics
    ctrl(1, fq)
    assert all(bool(m.started) for m in activation_quantisers(fq))
    assert fq.get_submodule("dw2.relu").clip_hi.item() != 6.0


def test_param_groups_separate_clip_bounds():
    fq = _fq()
    groups = pact_param_groups(fq, lr=0.01, weight_decay=4e-5, clip_lr=0.1, clip_weight_decay=1e-3)
    clip_ids = {id(p) for p in clip_parameters(fq)}
    assert {id(p) for p in groups[1]["params"]} == clip_ids
    assert not clip_ids & {id(p) for p in groups[0]["params"]}
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(fq.parameters()))
    assert (groups[1]["lr"], groups[1]["weight_decay"], groups[0]["weight_decay"]) == (0.1, 1e-3, 4e-5)
    torch.optim.SGD(groups, lr=0.01, momentum=0.9)  # accepted as is
