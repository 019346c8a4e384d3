"""The API under `qlspec plan` and `qlspec apply`: one spec file, one build folder, the stage graph."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from qlspec import __version__, atomic
from qlspec.report import gather, graph_section, rung_labels, write_report
from qlspec.spec.load import load_spec
from qlspec.spec.named_files import check_named_files
from qlspec.spec.secrets import is_secret
from qlspec.stages.engine import Pipeline, StageStatus, digest_json
from qlspec.stages.lock import build_lock
from qlspec.stages.registry import STAGES


def open_pipeline(spec_path: Path, build_root: Path = Path("build")) -> Pipeline:
    """Load and validate the spec (raises SpecError), and bind it to the stage graph."""
    loaded = load_spec(spec_path)
    check_named_files(loaded)  # a checkpoint that does not fit the network stops here, before any stage
    return Pipeline(STAGES, loaded.spec, spec_path, build_root)


def apply(
    pipeline: Pipeline,
    *,
    until: str | None = None,
    only: str | None = None,
    force: Iterable[str] = (),
    progress: bool = True,
    on_status: Callable[[StageStatus, str], None] = lambda status, event: None,
    log: Callable[[str], None] = print,
    options: Mapping[str, Any] = {},
) -> list[StageStatus]:
    """Run every stale stage in order up to `until`, then write the report; returns the final plan.

    `on_status(status, event)` is told each stage's fate: event is 'start', 'done', or 'pass'
    (up to date, skipped, not available yet). A failing stage raises; what was built before it stays.
    The build folder is locked meanwhile (`qlspec.stages.lock`): a second run on it stops at once.
    `options` reach the stages as command-line choices (``trust_new_host_key`` for deploy).
    """
    with build_lock(pipeline.build_dir):
        for status in pipeline.plan(force=force, until=until, only=only):
            if status.state == "will run":
                on_status(status, "start")
                pipeline.run_stage(status, progress=progress, log=log, options=options)
                on_status(status, "done")
            else:
                on_status(status, "pass")
            if status.state == "not available yet":
                break
        final = pipeline.plan()
        basis = report_basis(pipeline, final)
        if basis != _recorded_report_basis(pipeline.build_dir):  # a no-op apply leaves the report as it is
            write_final_report(pipeline, final)  # the report covers every stage that is up to date
            atomic.write_json(pipeline.build_dir / REPORT_BASIS, basis)
        return pipeline.plan(until=until, only=only)


REPORT_BASIS = ".report-basis.json"


def report_basis(pipeline: Pipeline, statuses: list[StageStatus]) -> dict[str, Any]:
    """What the report is made of: every stage's state and, when up to date, its record's key and
    finishing time (a stage rerun with the same key, as training may be, still counts as new)."""

    def record(name: str) -> list[Any]:
        r = pipeline.read_record(name) or {}
        return [r.get("key"), r.get("finished"), r.get("seconds")]

    shown = {k: v for k, v in pipeline.resolved.items() if not is_secret(k)}  # names and descriptions are in the report too
    return {
        "qlspec": __version__,
        "spec": digest_json(shown),
        "stages": {s.stage.name: [s.state, *(record(s.stage.name) if s.state == "up to date" else [])] for s in statuses},
    }


def _recorded_report_basis(build_dir: Path) -> dict[str, Any] | None:
    try:
        if not (build_dir / "report.md").is_file():
            return None
        return json.loads((build_dir / REPORT_BASIS).read_text())
    except (OSError, ValueError):
        return None


def requantiser_section(export_dir: Path) -> str:
    """The export's int32 cross-check, onnxruntime's count on the DORY file and the per-requantiser table."""
    info = json.loads((export_dir / "export.json").read_text())
    check, dory = info["int32_check"], info["self_check"]["dory"]
    return (
        f"Every requantiser recomputed as Deeploy's int32 kernel on the validation images: {check['mismatches']:,} of "
        f"{check['values']:,} values differ from the reference engine (smallest headroom {check['min_headroom']:.2f}x).\n"
        f"onnxruntime running the DORY file (float32 arithmetic): {dory['onnxruntime_vs_tq_mismatches']:,} of "
        f"{dory['onnxruntime_outputs']:,} outputs differ from TQ (0 is guaranteed only where every x*mul + add stays "
        f"below 2^24).\n\n" + (export_dir / "requantisers.md").read_text()
    )


def armcl_section(build_dir: Path, verified: bool) -> str:
    """What the build stage generated (kernels, requantiser lanes, memory) and what verify measured."""
    b = json.loads((build_dir / "build" / "build.json").read_text())
    kernels = ", ".join(f"{n} {k}" for k, n in b["kernels"].items())
    lanes = ", ".join(f"{n} in {k}" for k, n in b["requant_lanes"].items())
    armcl = b["backend"] == "armcl"
    made = (
        f"on ARM Compute Library 20.08 (`build/armcl/`, CMake; cross-built with {b['compiler']}"
        if armcl
        else f"without ACL (`build/cpu/`, CMake; built for this machine with {b['compiler']}"
    )
    text = (
        f"Generated C++ {made} in {b['compile_s']:.1f} s for {b['cpu']}). Kernels: {kernels}. Requantisers: {lanes} lanes "
        f"(int32 only where |x*mul + add| < 2^31 is proven for every accumulator the layer can produce). "
        f"Activation arena {b['arena_bytes']:,} bytes with the memory plan ({b['arena_naive_bytes']:,} without reuse); "
        f"weights {b['weights_bytes']:,} bytes; binary {b['binary_bytes']:,} bytes.\n"
    )
    if verified:
        v = json.loads((build_dir / "verify" / "verify.json").read_text())
        native = (
            " (output stage armcl-native: ARM-CL's fixed-point requantisation, measured, not the contract)"
            if v.get("output_stage") == "armcl-native"
            else ""
        )
        how = (
            f"run as `{v['emulator']}` with {v['threads']} threads in {v['wall_s']:.1f} s (emulated speed, not the board's)"
            if armcl
            else f"run here in {v['wall_s']:.1f} s"
        )
        text += (
            f"\nRung {'ARMCL' if armcl else 'CPU'}{native}: {v['mismatches']} of {v['outputs']:,} outputs differ from GRAPH on "
            f"{v['samples']} images, {how}.\n"
        )
        app = build_dir / "verify" / "app.json"
        if app.is_file():
            a = json.loads(app.read_text())
            t = a["median_ms_per_photo"]
            text += (
                f"\nThe AI application (`qlspec-app`: photo in, 68 landmarks out) on {a['photos']} photos made from the same "
                f"faces ({a['png']} PNG, {a['jpeg']} JPEG, each resized into a larger frame with a crop box around it):\n\n"
                f"- pre-processing (decode, crop, resize, quantise in C++): {a['preprocess_mismatches']} of {a['input_codes']:,} "
                f"input codes differ from the Python pipeline's on the same files;\n"
                f"- network: {a['network_mismatches_vs_graph']} of {a['network_outputs']:,} outputs differ from GRAPH run on the "
                f"app's input codes;\n"
                f"- post-processing (de-normalise, 68 landmarks, back to photo pixels, in double precision): at most "
                f"{a['landmark_max_abs_diff_px']:.1e} px from the Python post-processing's (tolerance "
                f"{a['landmark_tolerance_px']:g} px).\n\n"
                f"{'Emulated median' if armcl else 'Median'} per photo: decode {t['decode']:.1f} ms, pre-processing {t['preprocess']:.1f} ms, network "
                f"{t['network']:.1f} ms, post-processing {t['postprocess']:.2f} ms.\n"
            )
    return text


def deploy_section(build_dir: Path) -> str:
    """Where the app went, what was uploaded, and what the board measured."""
    d = json.loads((build_dir / "deploy" / "deploy.json").read_text())
    sent = (
        f"uploaded {d['uploaded_files']} files ({d['uploaded_bytes']:,} bytes)"
        if d["uploaded_bytes"]
        else "already on the board: nothing uploaded"
    )
    removed = f"; removed old releases {', '.join(d['removed_releases'])}" if d["removed_releases"] else ""
    launcher = f" through `{d['launcher']}`" if d["launcher"] else ""
    return (
        f"Release `{d['release']}` ({d['install']}) on `{d['board']}` at `{d['path']}`: {sent}; it is the current release "
        f"(previous: {d['previous'] or 'none'}){removed}.\n\n"
        f"Rung BOARD: {d['mismatches']} of {d['outputs']:,} outputs differ from GRAPH on {d['samples']} images, run{launcher} "
        f"with {d['threads']} threads; median {d['median_ms_per_batch']:.2f} ms per image on the board over {d['repeat']} timed "
        f"pass(es) (per-node times: `deploy/timing.json`).\n" + _app_on_board(build_dir)
    )


def _app_on_board(build_dir: Path) -> str:
    path = build_dir / "deploy" / "app.json"
    if not path.is_file():
        return ""
    a = json.loads(path.read_text())
    t = a["median_ms_per_photo"]
    return (
        f"\nThe AI application on the board, {a['photos']} photos ({a['png']} PNG, {a['jpeg']} JPEG): "
        f"{a['preprocess_mismatches']} of {a['input_codes']:,} input codes differ from the Python pre-processing, "
        f"{a['network_mismatches_vs_graph']} of {a['network_outputs']:,} outputs from GRAPH, landmarks within "
        f"{a['landmark_max_abs_diff_px']:.1e} px of the Python post-processing (`deploy/app/landmarks.json`); median per "
        f"photo on the board: decode {t['decode']:.1f} ms, pre-processing {t['preprocess']:.1f} ms, network "
        f"{t['network']:.1f} ms, post-processing {t['postprocess']:.2f} ms.\n"
    )


def write_final_report(pipeline: Pipeline, statuses: list[StageStatus]) -> None:
    """report.json / report.md from the rungs of the stages that are up to date."""
    current = {s.stage.name for s in statuses if s.state == "up to date"}
    rows = gather(pipeline.build_dir / name for name in current)
    pipeline.build_dir.mkdir(parents=True, exist_ok=True)
    from qlspec.report_pictures import pictures  # numpy, matplotlib and torch: only when a report is written

    sections: dict[str, str] = {}
    if "convert" in current:
        sections["Graph"] = graph_section(pipeline.build_dir / "convert")
    if "export" in current:
        sections["Requantisers (int32)"] = requantiser_section(pipeline.build_dir / "export")
    sections.update(pictures(pipeline.build_dir, rows, current))
    if "compare" in current:
        table = (pipeline.build_dir / "compare" / "compare.md").read_text()
        sections["PTQ vs PACT QAT"] = table + "\n![PTQ vs QAT](compare/compare.png)\n"
    if "build" in current:
        backend = "ARM-CL backend" if pipeline.spec.target.backend == "armcl" else "CPU backend"
        sections[backend] = armcl_section(pipeline.build_dir, "verify" in current)
    if "deploy" in current:
        sections["Deployment"] = deploy_section(pipeline.build_dir)
    write_report(
        pipeline.build_dir, pipeline.spec.name, rows, {s.stage.name: s.state for s in statuses}, sections, rung_labels(pipeline.spec)
    )
