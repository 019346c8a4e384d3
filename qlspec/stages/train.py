"""Stage `train`: train the float 3DDFA network (rung FP, and the MEAN baseline).

Outputs: model.pt (state dict of `MobileNetV1`), history.json (per-epoch loss and validation NME),
predictions.npz (validation parameters and landmarks), rungs.json (rows MEAN and FP).
Checkpoints go to the stage's partial folder after every epoch, so an interrupted run resumes there
when `apply` is run again with the same spec; they are dropped once the stage completes.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import torch

from qlspec.data.faceset import FaceSet
from qlspec.face.params import ParamStats
from qlspec.metrics.nme import mean_predictor_nme, nme_report
from qlspec.nets.checkpoint import load_3ddfa_checkpoint
from qlspec.nets.mobilenet_v1 import MobileNetV1
from qlspec.report import row, write_rungs
from qlspec.stages.engine import StageContext
from qlspec.training.trainer import predict, train


def run(ctx: StageContext) -> None:
    spec = ctx.spec
    cfg = spec.training
    torch.set_num_threads(cfg.threads)
    data = ctx.inputs["data"]
    train_set, val_set = FaceSet.load(data / "train.npz"), FaceSet.load(data / "val.npz")
    stats = ParamStats.load(data / "param_stats.npz")
    torch.manual_seed(cfg.seed)
    net = MobileNetV1(width=spec.network.width, num_params=62)
    if spec.network.pretrained is not None:
        load_3ddfa_checkpoint(net, spec.network.pretrained)
        ctx.log(f"  starting from {spec.network.pretrained.name}")
    result = train(
        net, train_set, val_set, stats=stats, epochs=cfg.epochs, batch_size=cfg.batch_size,
        optimizer=cfg.optimizer.name, lr=cfg.optimizer.lr, momentum=cfg.optimizer.momentum,
        nesterov=cfg.optimizer.nesterov, weight_decay=cfg.optimizer.weight_decay,
        loss_kind=cfg.loss.kind, landmark_weight=cfg.loss.landmark_weight,
        ckpt_dir=ctx.out / "checkpoints", seed=cfg.seed, progress=ctx.progress,
    )
    torch.save(net.state_dict(), ctx.out / "model.pt")
    (ctx.out / "history.json").write_text(json.dumps(result.history, indent=2) + "\n")
    params, landmarks = predict(net, val_set, stats, batch_size=256)
    np.savez(ctx.out / "predictions.npz", params=params, landmarks=landmarks)
    fp = nme_report(landmarks, val_set.landmarks, val_set.yaw_deg)
    baseline = mean_predictor_nme(stats, val_set)
    write_rungs(ctx.out, [
        row("MEAN", nme=baseline["mean"], n=len(val_set), by_yaw=baseline["bins"]),
        row("FP", nme=fp["mean"], n=len(val_set), by_yaw=fp["bins"]),
    ])
    shutil.rmtree(ctx.out / "checkpoints", ignore_errors=True)
    ctx.log(f"  FP NME {fp['mean']:.2f}% (mean-parameter predictor {baseline['mean']:.2f}%)")
