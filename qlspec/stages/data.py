"""Stage `data`: render the synthetic faces, or read the user's 300W-LP and AFLW2000-3D copies.

Outputs: train.npz and val.npz (`FaceSet`: BGR uint8 crops, 62 parameters, 68 landmarks, yaw),
param_stats.npz (mean and std of the parameters, the regression target's normalisation: the network's
own from ``network.param_stats`` when the spec names it, whatever the data kind; else 300W-LP's
``data.param_stats``; else the training parameters' statistics),
summary.json (counts and timings), and for real data face_model.npz (the 68-point rows of the
user's basis, so every later rung decodes parameters with it) and rois.npz (each crop's box in its
source image). Synthetic splits come from independent seeds derived from `data.seed`, so no
validation image is a training image.
"""

from __future__ import annotations

import json
import time

import numpy as np

from qlspec.data.real import read_300wlp, read_aflw2000
from qlspec.data.synthetic import render_synthetic
from qlspec.errors import StageError
from qlspec.face.bfm import load_bfm, param_stats_from_file, param_stats_from_pkl
from qlspec.face.params import ParamStats
from qlspec.face.store import save_face_model
from qlspec.progress import progress_bar
from qlspec.spec.models import ParamStatsValues, Real3DDFAData, SyntheticData
from qlspec.stages.engine import StageContext


def split_seeds(seed: int) -> tuple[int, int]:
    """Independent renderer seeds of the train and val splits, derived from the spec's seed."""
    train, val = np.random.SeedSequence([seed, 0x3DDFA]).generate_state(2)
    return int(train), int(val)


def network_param_stats(ctx: StageContext) -> ParamStats | None:
    """The network's own output normalisation (``network.param_stats``: a file or the values), or None."""
    given = ctx.spec.network.param_stats
    if given is None:
        return None
    if isinstance(given, ParamStatsValues):
        return ParamStats(np.asarray(given.mean, np.float32), np.asarray(given.std, np.float32))
    return param_stats_from_file(given)


def run(ctx: StageContext) -> None:
    cfg = ctx.spec.data
    if isinstance(cfg, SyntheticData):
        summary = _synthetic(ctx, cfg)
    else:
        summary = _real(ctx, cfg)
    (ctx.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def _synthetic(ctx: StageContext, cfg: SyntheticData) -> dict:
    train_seed, val_seed = split_seeds(cfg.seed)
    timings = {}
    for split, n, seed in (("train", cfg.train, train_seed), ("val", cfg.val, val_seed)):
        started = time.perf_counter()
        with progress_bar(f"render {split}", n, enabled=ctx.progress, unit="img") as advance:
            faces = render_synthetic(n, seed, size=ctx.spec.preprocess.size, progress=advance)
        faces.save(ctx.out / f"{split}.npz")
        timings[split] = round(time.perf_counter() - started, 2)
        if split == "train":
            (network_param_stats(ctx) or ParamStats.from_params(faces.params)).save(ctx.out / "param_stats.npz")
    ctx.log(f"  rendered {cfg.train} + {cfg.val} images in {sum(timings.values()):.1f} s")
    return {"kind": cfg.kind, "train": cfg.train, "val": cfg.val, "seeds": [train_seed, val_seed], "seconds": timings}


def _real(ctx: StageContext, cfg: Real3DDFAData) -> dict:
    started = time.perf_counter()
    basis = load_bfm(cfg.bfm)
    train = read_300wlp(cfg.root, bfm_basis=basis, limit=cfg.train_limit, size=ctx.spec.preprocess.size, landmarks=cfg.landmarks)
    val = read_aflw2000(cfg.val_root, limit=cfg.val_limit, size=ctx.spec.preprocess.size)
    if not np.isfinite(train.faces.params).all():
        raise StageError("300W-LP parameters contain NaN or infinity", where=str(cfg.root))
    stats = network_param_stats(ctx) or (
        param_stats_from_pkl(cfg.param_stats) if cfg.param_stats else ParamStats.from_params(train.faces.params)
    )
    train.faces.save(ctx.out / "train.npz")
    val.faces.save(ctx.out / "val.npz")
    stats.save(ctx.out / "param_stats.npz")
    save_face_model(basis, ctx.out)
    np.savez(ctx.out / "rois.npz", train=train.rois, val=val.rois)
    ctx.log(f"  read {len(train.faces)} 300W-LP + {len(val.faces)} AFLW2000-3D faces")
    return {"kind": cfg.kind, "train": len(train.faces), "val": len(val.faces), "seconds": round(time.perf_counter() - started, 2)}
