"""Stage `train`: train the float 3DDFA network (rung FP, and the MEAN baseline).

Outputs: model.pt (state dict of the network `network.arch` names, built by `qlspec.nets.registry`),
network.json (the registry's record of it),
history.json (per-epoch loss and validation NME), outputs.npz (the network's normalised outputs
on the validation split, which the next rung is compared with), rungs.json (rows MEAN and FP).
Checkpoints go to the stage's partial folder after every epoch, so an interrupted run resumes there
when `apply` is run again with the same spec; they are dropped once the stage completes.

Training runs where ``training.device`` says, and in ``training.distributed.processes`` processes
when that is more than one, or in every process torchrun started (`qlspec.training.distributed.launch`
and `crew`): each process rebuilds the data and the network from this stage's inputs, rank 0 hands
the trained weights back, and everything after training (outputs, rungs) runs here in one process on
the CPU, as with one process.

With ``training.epochs: 0`` the network is ``network.pretrained`` as it is: no training step runs and
the network is never put in training mode, so no batch-norm statistic moves; model.pt holds the
checkpoint's tensors and rung FP is its own outputs.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from typing import Any

import numpy as np
import torch

from qlspec import atomic
from qlspec.evaluation import landmarks_from_outputs, load_split, load_stats, network_outputs, nme_row, rung_row
from qlspec.face.store import load_face_model
from qlspec.metrics.nme import mean_predictor_nme
from qlspec.nets import registry
from qlspec.preprocess import InputTransform
from qlspec.report import write_rungs
from qlspec.stages.engine import StageContext
from qlspec.training.distributed import launch, team_size, world
from qlspec.training.hardware import Hardware
from qlspec.training.loss import LossConfig
from qlspec.training.trainer import train


def run(ctx: StageContext) -> None:
    spec = ctx.spec
    cfg = spec.training
    torch.set_num_threads(cfg.threads)
    train_set, val_set = load_split(ctx.inputs["data"], "train"), load_split(ctx.inputs["data"], "val")
    stats = load_stats(ctx.inputs["data"])
    face_model = load_face_model(ctx.inputs["data"])
    torch.manual_seed(cfg.seed)
    net = registry.build_from_spec(spec.network)
    prep = InputTransform.from_spec(spec.preprocess)
    history: list[dict] = []
    seconds = 0.0
    if cfg.epochs == 0:  # the spec's rule: network.pretrained is set
        name = spec.network.pretrained.name if spec.network.pretrained else "network.pretrained"
        ctx.log(f"  {name} as it is (training.epochs 0: no training step, batch-norm statistics as trained)")
    else:
        if spec.network.pretrained is not None:
            ctx.log(f"  starting from {spec.network.pretrained.name}")
        history, seconds = _train(ctx, net, train_set, val_set, stats, face_model, prep)
        net.to("cpu", memory_format=torch.contiguous_format)  # type: ignore[call-overload]  # the outputs below are a CPU's
    atomic.save_torch(ctx.out / "model.pt", net.state_dict())
    registry.write_record(spec.network, spec.preprocess.size, ctx.out)
    (ctx.out / "history.json").write_text(json.dumps(history, indent=2) + "\n")
    z = network_outputs(net, val_set, prep)
    np.savez(ctx.out / "outputs.npz", z=z)
    fp = nme_row("FP", landmarks_from_outputs(z, stats, face_model), val_set, seconds=round(seconds, 1))
    baseline = mean_predictor_nme(stats.mean, val_set.landmarks, val_set.yaw_deg, face_model)
    write_rungs(ctx.out, [rung_row("MEAN", baseline), fp])
    shutil.rmtree(ctx.out / "checkpoints", ignore_errors=True)
    ctx.log(f"  FP NME {fp['nme']:.2f}% (mean-parameter predictor {100 * baseline.mean:.2f}%)")


def _train(ctx: StageContext, net, train_set, val_set, stats, face_model, prep) -> tuple[list, float]:
    """Float training as the spec's training section says, here or in several processes; (history, seconds)."""
    settings = ctx.spec.training.distributed
    size = team_size(settings)
    if size == 1:
        return _fit(ctx, net, train_set, val_set, stats, face_model, prep)
    ctx.log(f"  training in {size} processes ({settings.backend})")
    done = launch(_fit_in_process, (dataclasses.replace(ctx, log=print), net.state_dict()), settings, shared=ctx.build_dir)
    net.load_state_dict(done["state"])
    return done["history"], done["seconds"]


def _fit_in_process(job: tuple[StageContext, dict[str, torch.Tensor]]) -> dict[str, Any] | None:
    """One training process: the stage's inputs and the initial weights rebuilt here; rank 0 returns the result."""
    ctx, initial = job
    spec = ctx.spec
    torch.set_num_threads(spec.training.threads)
    data = ctx.inputs["data"]
    net = registry.build_from_spec(spec.network)
    net.load_state_dict(initial)
    args = (
        load_split(data, "train"),
        load_split(data, "val"),
        load_stats(data),
        load_face_model(data),
        InputTransform.from_spec(spec.preprocess),
    )
    history, seconds = _fit(ctx, net, *args)
    if not world().is_main:
        return None
    return {"state": {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, "history": history, "seconds": seconds}


def _fit(ctx: StageContext, net, train_set, val_set, stats, face_model, prep) -> tuple[list, float]:
    cfg = ctx.spec.training
    result = train(
        net,
        train_set,
        val_set,
        stats=stats,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        optimizer=cfg.optimizer.name,
        lr=cfg.optimizer.lr,
        momentum=cfg.optimizer.momentum,
        nesterov=cfg.optimizer.nesterov,
        weight_decay=cfg.optimizer.weight_decay,
        schedule=cfg.optimizer.schedule,
        warmup_epochs=cfg.optimizer.warmup_epochs,
        loss_cfg=LossConfig(param_weight=cfg.loss.param_weight, landmark_weight=cfg.loss.landmark_weight, landmark=cfg.loss.landmark),
        ckpt_dir=ctx.out / "checkpoints",
        seed=cfg.seed,
        progress=ctx.progress,
        face_model=face_model,
        transform=prep,
        hardware=Hardware.from_spec(cfg, "float", world().local_rank),
    )
    if result.resumed_from and world().is_main:
        ctx.log(f"  resumed after epoch {result.resumed_from}, from the checkpoint an interrupted run left")
    return result.history, result.seconds
