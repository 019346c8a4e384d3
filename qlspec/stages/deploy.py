"""Stage `deploy`: push the built application to the board with fabric, run it there (rung BOARD).

Steps (`qlspec.deploy.board` holds the board's folder layout):

1. connect over SSH, the host key verified against `deploy.known_hosts`;
2. upload the release (the cross-built binary and weights, or the CMake project for `install:
   build`) into a fresh folder, unless a release with the same content is on the board already
   (then nothing is uploaded); check it with sha256sum, build it there if asked, and check that the
   app starts (ARM-CL present, right architecture);
3. run it on the first `deploy.samples` validation images, fetch its outputs and timing;
4. check them against GRAPH: any mismatch stops the stage (with `target.output_stage: armcl-native`
   they are measured instead), and the release does not become current;
5. switch `current` to it atomically and keep the last `deploy.keep_releases` releases.

A failure at any step leaves the board's current release as it was. Outputs: outputs.npz
(``board``), timing.json (the board's own median per batch and per node), landmarks.json (the 68
landmarks per image, from the board's outputs by the Python post-processing), rungs.json (row
BOARD) and deploy.json (board, release, what was uploaded, timings).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from qlspec import atomic
from qlspec.deploy.board import Board, release_files, release_id
from qlspec.deploy.ssh import Remote, connect, where
from qlspec.errors import DeployError
from qlspec.evaluation import landmarks_from_outputs, load_stats
from qlspec.face.store import load_face_model
from qlspec.report import write_rungs
from qlspec.stages.engine import StageContext
from qlspec.stages.samples import checked_row, validation_samples


def run(ctx: StageContext) -> None:
    spec, deploy = ctx.spec, ctx.spec.deploy
    files = release_files(ctx.inputs["build"] / "armcl", deploy.install)
    rid = release_id(files, deploy.install)
    samples = validation_samples(ctx, deploy.samples)
    t0 = time.perf_counter()
    conn = connect(deploy, ctx.spec_path.parent, trust_new_host_key=bool(ctx.options.get("trust_new_host_key")))
    try:
        board = Board.open(Remote(conn, deploy))
        previous = board.current()
        t1 = time.perf_counter()
        sent = board.upload(rid, files)
        t2 = time.perf_counter()
        ctx.log(f"  release {rid}: " + (f"uploaded {len(files)} files, {sent / 1024:.0f} KiB" if sent
                                         else "already on the board, nothing uploaded"))
        with tempfile.TemporaryDirectory(prefix="qlspec-deploy-") as tmp:
            np.save(Path(tmp) / "input_0.npy", samples.inputs)
            run_dir = board.run_app(rid, [Path(tmp) / "input_0.npy"], threads=spec.target.threads, repeat=deploy.repeat,
                                    fetch_to=ctx.out / "fetched")
        t3 = time.perf_counter()
        outputs = np.load(ctx.out / "fetched" / "output_0.npy")
        row, bad = checked_row("BOARD", outputs, samples, ctx, host=where(deploy), release=rid,
                               output_stage=spec.target.output_stage)
        if spec.target.output_stage == "exact" and bad.any():
            first = int(np.argwhere(bad)[0][0])
            raise DeployError(f"BOARD differs from GRAPH on {int(bad.sum())} of {bad.size} outputs (first at validation image "
                              f"{first}); release {rid} was not made current", where=where(deploy))
        if previous != rid:
            board.make_current(rid)
        removed = board.prune(deploy.keep_releases)
    finally:
        conn.close()
    timing = json.loads((ctx.out / "fetched" / "timing.json").read_text())
    out = outputs.reshape(bad.shape).astype(np.int64)
    np.savez(ctx.out / "outputs.npz", board=out)
    atomic.write_json(ctx.out / "timing.json", timing)
    landmarks = landmarks_from_outputs(out * samples.eps, load_stats(ctx.inputs["data"]), load_face_model(ctx.inputs["data"]))
    atomic.write_json(ctx.out / "landmarks.json", {"points": 68, "units": "crop pixels (x, y)",
                                                   "images": [lm.T.astype(float).round(3).tolist() for lm in landmarks]})
    write_rungs(ctx.out, [row])
    atomic.write_json(ctx.out / "deploy.json", {
        "board": where(deploy), "path": board.root, "release": rid, "previous": previous, "install": deploy.install,
        "uploaded_files": len(files) if sent else 0, "uploaded_bytes": sent, "removed_releases": removed, "run_folder": run_dir,
        "launcher": deploy.launcher, "samples": len(samples.inputs), "threads": spec.target.threads, "repeat": deploy.repeat,
        "median_ms_per_batch": timing.get("median_ms_per_batch"),
        "mismatches": int(bad.sum()), "outputs": int(bad.size), "output_stage": spec.target.output_stage,
        "connect_s": round(t1 - t0, 2), "upload_s": round(t2 - t1, 2), "run_s": round(t3 - t2, 2)})
    ctx.log(f"  BOARD vs GRAPH: {int(bad.sum())} mismatches of {bad.size} outputs on {len(samples.inputs)} images; "
            f"current release {rid} on {where(deploy)}:{board.root}")
