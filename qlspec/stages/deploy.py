"""Stage `deploy`: push the built application to the board with fabric, run it there (rung BOARD).

Steps (`qlspec.deploy.board` holds the board's folder layout):

1. connect over SSH, the host key verified against `deploy.known_hosts`;
2. upload the release (the cross-built binary and weights, or the CMake project for `install:
   build`) into a fresh folder, unless a release with the same content is on the board already
   (then nothing is uploaded); check it with sha256sum, build it there if asked, and check that the
   app starts (ARM-CL present, right architecture);
3. run the network (qlspec-net) on the first `deploy.samples` validation images, and the AI
   application (qlspec-app) on the same faces as photo files (`qlspec.codegen.photos`), and fetch
   their outputs, landmarks and timing;
4. check them: the network's outputs against GRAPH (any mismatch stops the stage; with
   `target.output_stage: armcl-native` they are measured instead), the app's input codes, outputs
   and landmarks against the Python pipeline as the verify stage does; a release that fails does
   not become current;
5. switch `current` to it atomically and keep the last `deploy.keep_releases` releases.

A failure at any step leaves the board's current release as it was. Outputs: outputs.npz
(``board``), timing.json (the board's own median per batch and per node), rungs.json (row
BOARD), app/ (the app's landmarks.json, input and output codes and timing from the board), app.json
(its checks) and deploy.json (board, release, what was uploaded, timings).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from qlspec import atomic
from qlspec.codegen.build import APP, BINARY
from qlspec.codegen.photos import Photo, app_arguments, app_failure, write_photos
from qlspec.deploy.board import Board, release_files, release_id
from qlspec.deploy.ssh import Remote, connect, where
from qlspec.errors import DeployError
from qlspec.report import write_rungs
from qlspec.stages.engine import StageContext
from qlspec.stages.samples import app_report, checked_row, validation_samples

APP_FILES = ("landmarks.json", "input_0.npy", "output_0.npy", "timing.json")


def run(ctx: StageContext) -> None:
    spec, deploy = ctx.spec, ctx.spec.deploy
    files = release_files(ctx.inputs["build"] / "armcl", deploy.install)
    rid = release_id(files, deploy.install)
    samples = validation_samples(ctx, min(deploy.samples, spec.verify.samples))
    t0 = time.perf_counter()
    conn = connect(deploy, ctx.spec_path.parent, trust_new_host_key=bool(ctx.options.get("trust_new_host_key")))
    try:
        board = Board.open(Remote(conn, deploy))
        with board.locked():
            previous = board.current()
            t1 = time.perf_counter()
            sent = board.upload(rid, files)
            t2 = time.perf_counter()
            ctx.log(
                f"  release {rid}: "
                + (f"uploaded {len(files)} files, {sent / 1024:.0f} KiB" if sent else "already on the board, nothing uploaded")
            )
            with tempfile.TemporaryDirectory(prefix="qlspec-deploy-") as tmp:
                np.save(Path(tmp) / "input_0.npy", samples.inputs)
                run_dir = board.run_app(
                    rid,
                    BINARY,
                    [(Path(tmp) / "input_0.npy", "input_0.npy")],
                    ["--profile", "{run}/input_0.npy"],
                    threads=spec.target.threads,
                    repeat=deploy.repeat,
                    fetch_to=ctx.out / "fetched",
                    fetch=("output_0.npy", "timing.json"),
                )
                t3 = time.perf_counter()
                photos = write_photos(np.asarray(samples.faces.images), Path(tmp) / "photos")
                board.run_app(
                    rid,
                    APP,
                    [(p.path, p.path.name) for p in photos],
                    app_arguments([Photo(Path("{run}") / p.path.name, p.roi) for p in photos]),
                    threads=spec.target.threads,
                    repeat=deploy.repeat,
                    fetch_to=ctx.out / "app",
                    fetch=APP_FILES,
                )
                app = app_report(
                    ctx,
                    np.load(ctx.out / "app" / "input_0.npy"),
                    np.load(ctx.out / "app" / "output_0.npy"),
                    json.loads((ctx.out / "app" / "landmarks.json").read_text()),
                    photos,
                )
            t4 = time.perf_counter()
            outputs = np.load(ctx.out / "fetched" / "output_0.npy")
            row, bad = checked_row("BOARD", outputs, samples, ctx, host=where(deploy), release=rid, output_stage=spec.target.output_stage)
            if spec.target.output_stage == "exact" and bad.any():
                first = int(np.argwhere(bad)[0][0])
                raise DeployError(
                    f"BOARD differs from GRAPH on {int(bad.sum())} of {bad.size} outputs (first at validation image "
                    f"{first}); release {rid} was not made current",
                    where=where(deploy),
                )
            failure = app_failure(app, exact=spec.target.output_stage == "exact")
            if failure:
                raise DeployError(f"on the board, {failure}; release {rid} was not made current", where=where(deploy))
            if previous != rid:
                board.make_current(rid)
            removed = board.prune(deploy.keep_releases)
    finally:
        conn.close()
    timing = json.loads((ctx.out / "fetched" / "timing.json").read_text())
    out = outputs.reshape(bad.shape).astype(np.int64)
    np.savez(ctx.out / "outputs.npz", board=out)
    atomic.write_json(ctx.out / "timing.json", timing)
    app["median_ms_per_photo"] = json.loads((ctx.out / "app" / "timing.json").read_text())["median_ms_per_image"]
    atomic.write_json(ctx.out / "app.json", app)
    write_rungs(ctx.out, [row])
    atomic.write_json(
        ctx.out / "deploy.json",
        {
            "board": where(deploy),
            "path": board.root,
            "release": rid,
            "previous": previous,
            "install": deploy.install,
            "uploaded_files": len(files) if sent else 0,
            "uploaded_bytes": sent,
            "removed_releases": removed,
            "run_folder": run_dir,
            "launcher": deploy.launcher,
            "samples": len(samples.inputs),
            "threads": spec.target.threads,
            "repeat": deploy.repeat,
            "median_ms_per_batch": timing.get("median_ms_per_batch"),
            "mismatches": int(bad.sum()),
            "outputs": int(bad.size),
            "output_stage": spec.target.output_stage,
            "connect_s": round(t1 - t0, 2),
            "upload_s": round(t2 - t1, 2),
            "run_s": round(t3 - t2, 2),
            "app_s": round(t4 - t3, 2),
        },
    )
    ctx.log(
        f"  app on the board, {app['photos']} photos: {app['preprocess_mismatches']} input codes and "
        f"{app['network_mismatches_vs_graph']} outputs differ, landmarks within {app['landmark_max_abs_diff_px']:.1e} px"
    )
    ctx.log(
        f"  BOARD vs GRAPH: {int(bad.sum())} mismatches of {bad.size} outputs on {len(samples.inputs)} images; "
        f"current release {rid} on {where(deploy)}:{board.root}"
    )
