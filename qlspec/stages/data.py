"""Stage `data`: render (or later, read) the training and validation images.

Outputs: train.npz and val.npz (`FaceSet`: BGR uint8 crops, 62 parameters, 68 landmarks, yaw),
param_stats.npz (mean and std of the training parameters, used to normalise the regression target),
summary.json (counts and timings). The two splits come from independent seeds derived from
`data.seed`, so no validation image is a training image.
"""

from __future__ import annotations

import json
import time

import numpy as np

from qlspec.data.synthetic import render_synthetic
from qlspec.face.params import ParamStats
from qlspec.progress import progress_bar
from qlspec.stages.engine import StageContext


def split_seeds(seed: int) -> tuple[int, int]:
    """Independent renderer seeds of the train and val splits, derived from the spec's seed."""
    train, val = np.random.SeedSequence([seed, 0x3DDFA]).generate_state(2)
    return int(train), int(val)


def run(ctx: StageContext) -> None:
    cfg = ctx.spec.data
    train_seed, val_seed = split_seeds(cfg.seed)
    timings = {}
    for split, n, seed in (("train", cfg.train, train_seed), ("val", cfg.val, val_seed)):
        started = time.perf_counter()
        with progress_bar(f"render {split}", n, enabled=ctx.progress, unit="img") as advance:
            faces = render_synthetic(n, seed, size=ctx.spec.preprocess.size, progress=advance)
        faces.save(ctx.out / f"{split}.npz")
        timings[split] = round(time.perf_counter() - started, 2)
        if split == "train":
            ParamStats.from_params(faces.params).save(ctx.out / "param_stats.npz")
    summary = {"kind": cfg.kind, "train": cfg.train, "val": cfg.val, "seeds": [train_seed, val_seed], "render_seconds": timings}
    (ctx.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    ctx.log(f"  rendered {cfg.train} + {cfg.val} images in {sum(timings.values()):.1f} s")
