"""Stage `train`: train the float 3DDFA network (rung FP, and the MEAN baseline).

Outputs: model.pt (state dict of the network `network.arch` names, built by `qlspec.nets.registry`),
network.json (the registry's record of it),
history.json (per-epoch loss and validation NME), outputs.npz (the network's normalised outputs
on the validation split, which the next rung is compared with), rungs.json (rows MEAN and FP).
Checkpoints go to the stage's partial folder after every epoch, so an interrupted run resumes there
when `apply` is run again with the same spec; they are dropped once the stage completes.

With ``training.epochs: 0`` the network is ``network.pretrained`` as it is: no training step runs and
the network is never put in training mode, so no batch-norm statistic moves; model.pt holds the
checkpoint's tensors and rung FP is its own outputs.
"""

from __future__ import annotations

import json
import shutil

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
    """Float training as the spec's training section says; (history, seconds)."""
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
    )
    return result.history, result.seconds
