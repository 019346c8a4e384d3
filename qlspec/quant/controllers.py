"""QuantLib-style PACT controllers and the optimiser parameter groups for clipping bounds.

QuantLib drives quantisation with controllers that run commands at given epochs
(``PACTActController`` / ``PACTLinearController``: ``start``, ``freeze``, ...). `PACTController`
is the two schedules this project uses, in one object:

- at ``start_epoch`` (weights; activations at ``act_start_epoch``, default the same epoch):
  initialise the bounds with each quantiser's ``init`` method and set ``started`` (QuantLib ``start``);
- at ``freeze_clip_at``: stop learning every clipping bound (``requires_grad=False``, grad dropped)
  and stop recomputing weight bounds from the weights (QuantLib ``freeze``).

Unlike QuantLib's exact-epoch schedules, `step` catches up: ``step(e)`` applies every command due at
or before ``e`` that has not been applied yet, so resuming training at a later epoch is safe (``started``
and ``frozen`` are also buffers in the state dict). Activation inits other than 'const' need
statistics; the quantisers record them while in float mode (the epochs before the start) and
`calibration_batches` can supply them when quantisation starts at the first epoch.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from qlspec.quant.pact import PACT_LINEAR_OPS, _PACTActivation, _PACTLinearOp


def activation_quantisers(net: nn.Module) -> list[_PACTActivation]:
    return [m for m in net.modules() if isinstance(m, _PACTActivation)]


def weight_quantisers(net: nn.Module) -> list[_PACTLinearOp]:
    return [m for m in net.modules() if isinstance(m, PACT_LINEAR_OPS)]


def clip_parameters(net: nn.Module) -> list[nn.Parameter]:
    """Every clipping parameter of every PACT module in `net` (learned or not), each once."""
    seen: dict[int, nn.Parameter] = {}
    for m in net.modules():
        if isinstance(m, (_PACTActivation, *PACT_LINEAR_OPS)):
            for p in m.clip_parameters():
                seen.setdefault(id(p), p)
    return list(seen.values())


def pact_param_groups(
    net: nn.Module,
    lr: float,
    weight_decay: float = 0.0,
    clip_lr: float | None = None,
    clip_weight_decay: float = 1e-3,
) -> list[dict]:
    """Two optimiser parameter groups, as QuantLib's PACTSGD/PACTAdam build them.

    Group 0: every other parameter, with `lr` and `weight_decay`. Group 1: the clipping bounds,
    with `clip_lr` (default `lr`) and `clip_weight_decay` (QuantLib's ``pact_decay``, the L2
    penalty on PACT's alpha that pulls bounds in; QuantLab's MobileNet configs use 1e-3).
    Use as ``torch.optim.SGD(pact_param_groups(net, lr=1e-3), momentum=0.9)``. Bounds that are
    frozen or not learned have no gradient, so the optimiser leaves them alone.
    """
    clips = clip_parameters(net)
    clip_ids = {id(p) for p in clips}
    others = [p for p in net.parameters() if id(p) not in clip_ids]
    return [
        {"params": others, "lr": lr, "weight_decay": weight_decay},
        {"params": clips, "lr": lr if clip_lr is None else clip_lr, "weight_decay": clip_weight_decay},
    ]


class PACTController:
    """Start and freeze the PACT quantisers of `net` by epoch; use as ``on_epoch_start(epoch, net)``.

    Args:
        net: the fake-quantised network (from `float_to_fake`).
        start_epoch: first epoch (0-based) trained with quantised weights (and activations unless
            `act_start_epoch` says otherwise). QuantLab's 8-bit MobileNet configs start at 0.
        freeze_clip_at: first epoch with frozen clipping bounds; None: never freeze.
        act_start_epoch: first epoch with quantised activations (default `start_epoch`; QuantLab's
            MobileNetV2 config quantises weights one epoch earlier than activations).
        calibration_batches: inputs run through the net (eval mode, no gradient) just before the
            activations start, to give 'max'/'std'/'percentile'/'mse' inits their statistics. When
            weights start in the same epoch they start first, so the statistics are those of the
            network with quantised weights (the one the activations will see).
        verbose: print each command as it runs.
    """

    def __init__(
        self,
        net: nn.Module,
        start_epoch: int = 0,
        freeze_clip_at: int | None = None,
        act_start_epoch: int | None = None,
        calibration_batches: Iterable[Tensor] | None = None,
        verbose: bool = False,
    ) -> None:
        self.net = net
        self.start_epoch = start_epoch
        self.act_start_epoch = start_epoch if act_start_epoch is None else act_start_epoch
        self.freeze_clip_at = freeze_clip_at
        self.calibration_batches = calibration_batches
        self.verbose = verbose
        self.log: list[tuple[int, str]] = []

    def __call__(self, epoch: int, net: nn.Module | None = None) -> list[str]:
        return self.step(epoch, net)

    on_epoch_start = __call__

    def step(self, epoch: int, net: nn.Module | None = None) -> list[str]:
        """Apply every command due at or before `epoch` not applied yet; return the commands run."""
        net = self.net if net is None else net
        done: list[str] = []
        weights, acts = weight_quantisers(net), activation_quantisers(net)
        if epoch >= self.start_epoch and any(not bool(m.started) for m in weights):
            start_weights(net)
            done.append("start_weights")
        if epoch >= self.act_start_epoch and any(not bool(m.started) for m in acts):
            if self.calibration_batches is not None:
                observe(net, self.calibration_batches)
            start_activations(net)
            done.append("start_activations")
        if self.freeze_clip_at is not None and epoch >= self.freeze_clip_at and not is_frozen(net):
            freeze_clip(net)
            done.append("freeze")
        for cmd in done:
            self.log.append((epoch, cmd))
            if self.verbose:
                print(f"[PACTController] epoch {epoch}: {cmd}")
        return done


def start_weights(net: nn.Module) -> None:
    """QuantLib ``start`` for convolutions/linears: bounds from the weights with ``init``, then ``started``."""
    for m in weight_quantisers(net):
        if not bool(m.frozen):
            m.init_clip()
        m.started.fill_(True)


def start_activations(net: nn.Module) -> None:
    """QuantLib ``start`` for activations: bounds from the statistics with ``init``, then ``started``.

    In several processes (torch.distributed) the statistics are first pooled over all of them
    (`ActivationObserver.all_reduce`), so every process starts with the same bounds."""
    for m in activation_quantisers(net):
        if not bool(m.started):
            if not m.fixed and m.init != "const":
                m.observer.all_reduce()
            m.init_clip()
            m.started.fill_(True)


@torch.no_grad()
def observe(net: nn.Module, batches: Iterable[Tensor]) -> int:
    """Run `batches` through `net` in eval mode so that float-mode quantisers record statistics.

    BatchNorm uses (and does not update) its running statistics. Returns the number of batches.
    """
    was_training = net.training
    net.eval()
    dev = next((p.device for p in net.parameters()), torch.device("cpu"))
    n = 0
    try:
        for x in batches:
            net(x.to(dev))
            n += 1
    finally:
        net.train(was_training)
    return n


def freeze_clip(net: nn.Module) -> None:
    """QuantLib ``freeze``: no more learning of any clipping bound, and weight bounds stop tracking the weights."""
    for m in weight_quantisers(net):
        m.bounds()  # bring recomputed bounds up to date with the weights before fixing them
        m.frozen.fill_(True)
    for p in clip_parameters(net):
        p.requires_grad_(False)
        p.grad = None


def is_frozen(net: nn.Module) -> bool:
    """Whether every clipping bound of `net` is frozen."""
    return all(bool(m.frozen) for m in weight_quantisers(net)) and not any(p.requires_grad for p in clip_parameters(net))
