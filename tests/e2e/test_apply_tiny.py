"""`qlspec apply` / `plan` on a tiny real spec: real data and training stages, seconds not minutes."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from private_fs import run_private
from tiny_app import copy_tiny_app, tiny_spec

from qlspec.stages.registry import STAGES

BUILT = [s.name for s in STAGES if s.run is not None and s.name not in ("compare", "deploy")]  # deploy: tests/deploy


def qlspec(*args, cwd):
    return subprocess.run([sys.executable, "-m", "qlspec", *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def built(tiny_app, tmp_path_factory):
    """This module's own copy of the tiny app, as `qlspec apply` left it, and that apply's result."""
    root, r = tiny_app
    return copy_tiny_app(root, tmp_path_factory.mktemp("tiny")), r


def test_apply_runs_every_stage_and_skips_deploy_unless_enabled(built):
    root, r = built
    for stage in BUILT:
        assert f"{stage:<9} done" in r.stdout
    assert "deploy    skipped  (deploy.enabled is false)" in r.stdout and "not available yet" not in r.stdout
    for stage in BUILT:
        record = json.loads((root / "build" / "tiny" / stage / "stage.json").read_text())
        assert record["schema"] == 1 and record["stage"] == stage and record["outputs"]
    assert not (root / "build" / "tiny" / "train" / "checkpoints").exists()


def test_report_has_a_row_per_rung_done(built):
    root, _ = built
    report = json.loads((root / "build" / "tiny" / "report.json").read_text())
    rungs = {row["rung"]: row for row in report["rows"]}
    assert {"MEAN", "FP"} <= set(rungs)
    if "quantise" in BUILT:
        assert rungs["FQ"]["max_abs_diff"] > 0  # fake quantisation changes the outputs
    for row in rungs.values():
        assert row["nme"] > 0
        assert set(row) >= {"rung", "nme", "max_abs_diff", "mismatches", "n"}
    md = (root / "build" / "tiny" / "report.md").read_text()
    assert md.splitlines()[2] == "| rung | NME % | against the rung above |"  # the report leads with the ladder
    assert f"| FP (float MobileNet-V1 x0.25) | {rungs['FP']['nme']:.2f} | |" in md


def test_second_apply_is_a_fast_no_op(built):
    """Nothing reruns, the report stays as it is, and neither torch nor matplotlib is imported."""
    root, _ = built
    before = {f: (root / "build" / "tiny" / f).stat().st_mtime_ns for f in ("train/model.pt", "report.md")}
    started = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "qlspec", "apply", "app.yaml", "--no-progress"], capture_output=True, text=True, cwd=root
    )
    assert r.returncode == 0
    assert time.perf_counter() - started < 30
    for stage in BUILT:
        assert f"{stage:<9} up to date" in r.stdout
    assert {f: (root / "build" / "tiny" / f).stat().st_mtime_ns for f in before} == before
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & {"torch", "matplotlib", "onnx", "scipy"}


def test_editing_epochs_makes_train_and_everything_after_stale(built):
    root, _ = built
    edited = root / "edited.yaml"
    edited.write_text(tiny_spec(epochs=2))
    (root / "build-edited").mkdir(exist_ok=True)
    r = qlspec("plan", "edited.yaml", cwd=root)
    assert r.returncode == 0
    lines = {line.split()[0]: line for line in r.stdout.splitlines()}
    assert "data      up to date" in lines["data"]
    assert lines["train"].startswith("train     will run") and "training.epochs modified: 1 -> 2" in lines["train"]
    for stage in BUILT[2:]:
        assert lines[stage].startswith(f"{stage:<9} will run")
    assert "compare   skipped  (compare.algorithms is empty)" in lines["compare"]
    assert "skipped  (deploy.enabled is false)" in lines["deploy"]
    assert qlspec("plan", "edited.yaml", "--check", cwd=root).returncode == 1
    assert qlspec("plan", "app.yaml", "--check", cwd=root).returncode == 0


def test_compare_runs_ptq_and_pact_from_the_same_float_model(built):
    root, _ = built
    train_record = (root / "build" / "tiny" / "train" / "stage.json").read_text()
    r = qlspec("compare", "app.yaml", "--bits", "8", "--bits", "4", "--no-progress", cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "train     up to date" in r.stdout and "compare   done" in r.stdout
    assert "quantise  skipped  (not needed for compare)" in r.stdout  # nothing compare does not need
    result = json.loads((root / "build" / "tiny" / "compare" / "compare.json").read_text())
    got = {(row["algorithm"], row["bits"]) for row in result["rows"]}
    assert got == {("ptq", 8), ("pact", 8), ("ptq", 4), ("pact", 4)}
    assert all(row["nme"] > 0 and row["seconds"] > 0 for row in result["rows"])
    assert (root / "build" / "tiny" / "compare" / "compare.png").stat().st_size > 1000
    assert "| PTQ | 4/4 |" in r.stdout and "| PACT QAT | 8/8 |" in r.stdout
    assert (root / "build" / "tiny" / "train" / "stage.json").read_text() == train_record  # float model reused
    again = qlspec("compare", "app.yaml", "--bits", "8", "--bits", "4", "--no-progress", cwd=root)
    assert "compare   up to date" in again.stdout


def test_compare_rejects_bad_bits(built):
    root, _ = built
    r = qlspec("compare", "app.yaml", "--bits", "5", cwd=root)
    assert r.returncode == 2 and "qlspec compare: bits.0:" in r.stderr


def test_integer_rungs_are_bit_exact_and_the_report_keeps_them_after_compare(built):
    root, _ = built
    qlspec("compare", "app.yaml", "--bits", "8", "--no-progress", cwd=root)
    report = json.loads((root / "build" / "tiny" / "report.json").read_text())
    rungs = {row["rung"]: row for row in report["rows"]}
    if "convert" not in BUILT:
        return
    assert rungs["ONNX"]["mismatches"] == 0 and rungs["GRAPH"]["mismatches"] == 0
    assert rungs["ONNX"]["n"] == rungs["TQ"]["n"] == 16
    assert rungs["ONNX"]["nme"] == rungs["TQ"]["nme"] == rungs["GRAPH"]["nme"]
    assert rungs["TQ"]["mismatches"] == 0  # against FQI, the quantise stage's integer evaluation
    fqi = np.load(root / "build" / "tiny" / "quantise" / "fqi_outputs.npz")["output"]
    tq = np.load(root / "build" / "tiny" / "export" / "tq_outputs.npz")["output"]
    np.testing.assert_array_equal(fqi[: len(tq)], tq)
    export = json.loads((root / "build" / "tiny" / "export" / "export.json").read_text())
    assert export["int32_check"]["mismatches"] == 0 and export["int32_check"]["values"] > 0
    md = (root / "build" / "tiny" / "report.md").read_text()
    assert "## Requantisers (int32)" in md and "| requantiser | source | D | mul bits |" in md
    assert "| FQI |" in md
    summary = (root / "build" / "tiny" / "convert" / "summary.txt").read_text()
    assert "ConvRequant" in summary and "peak activation memory" in summary
    graph = json.loads((root / "build" / "tiny" / "convert" / "summary.json").read_text())["optimised"]
    assert f"| MACs | {graph['macs']:,} |" in md
    assert f"| peak activation memory with the memory plan | {graph['activation_bytes_planned']:,} bytes" in md


def test_report_shows_yaw_bins_and_pictures(built):
    root, _ = built
    build = root / "build" / "tiny"
    md = (build / "report.md").read_text()
    assert "## NME per yaw bin (%)" in md and "![NME per yaw bin](nme_by_yaw.png)" in md
    assert "![landmark overlays](landmarks.png)" in md
    fp_line = next(line for line in md.splitlines() if line.startswith("| FP | 32 |"))
    assert len(fp_line.split("|")) == 9  # rung, n, three bins, mean of bins, all
    for png in ("nme_by_yaw.png", "landmarks.png"):
        data = (build / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    from PIL import Image

    from qlspec.plots import merge_identical
    from qlspec.report_pictures import OVERLAY_IMAGES, rung_outputs

    outputs = {rung: z[:OVERLAY_IMAGES] for rung, z in rung_outputs(build, set(BUILT)).items()}
    columns = merge_identical(outputs)
    assert "FQI = TQ = ONNX = GRAPH" in columns  # equal integer outputs share one panel
    with Image.open(build / "landmarks.png") as im:
        assert im.size[0] == 160 * len(columns)  # one 160-pixel panel per distinct rung
    with Image.open(build / "nme_by_yaw.png") as im:
        assert im.size[0] > 2 * 400  # two panels: NME per bin, difference against FP


def test_armcl_rung_is_bit_exact_under_qemu(built):
    root, _ = built
    build = root / "build" / "tiny"
    rungs = {row["rung"]: row for row in json.loads((build / "report.json").read_text())["rows"]}
    assert rungs["ARMCL"]["mismatches"] == 0 and rungs["ARMCL"]["n"] == 16
    assert rungs["ARMCL"]["nme"] == rungs["GRAPH"]["nme"]
    assert np.array_equal(np.load(build / "verify" / "outputs.npz")["armcl"], np.load(build / "convert" / "outputs.npz")["graph"])
    lowering = json.loads((build / "build" / "armcl" / "lowering.json").read_text())
    assert {"acl-gemmlowp", "depthwise"} <= set(lowering["kernels"].values())
    assert (build / "build" / "armcl" / "bin" / "qlspec-net").stat().st_size > 10_000
    md = (build / "report.md").read_text()
    assert "## ARM-CL backend" in md and "Rung ARMCL: 0 of" in md


def test_the_ai_application_matches_the_python_pipeline_on_photos(built):
    root, _ = built
    build = root / "build" / "tiny"
    app = json.loads((build / "verify" / "app.json").read_text())
    assert app["photos"] == 16 and app["png"] == app["jpeg"] == 8
    assert app["preprocess_mismatches"] == 0 and app["input_codes"] == 16 * 3 * 120 * 120
    assert app["network_mismatches_vs_graph"] == 0 and app["landmark_max_abs_diff_px"] <= app["landmark_tolerance_px"]
    assert "input codes differ from the Python pipeline's" in (build / "report.md").read_text()


def test_run_draws_landmarks_on_the_users_photos(built, tmp_path):
    from PIL import Image

    root, _ = built
    faces = np.load(root / "build" / "tiny" / "data" / "val.npz")["images"]
    photo = tmp_path / "me.jpg"
    Image.fromarray(np.kron(faces[0][..., ::-1], np.ones((2, 2, 1), np.uint8))).save(photo, quality=95)
    r = qlspec("run", "app.yaml", photo, "-o", tmp_path / "out", "--no-progress", cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    drawn = tmp_path / "out" / "me_landmarks.png"
    assert f"{photo} -> {drawn}" in r.stdout
    result = json.loads((tmp_path / "out" / "landmarks.json").read_text())["images"][0]
    assert result["image"] == str(photo) and result["roi"] == [0, 0, 240, 240] and len(result["landmarks"]) == 68
    before, after = np.asarray(Image.open(photo).convert("RGB")), np.asarray(Image.open(drawn))
    assert after.shape == before.shape
    x, y = (round(v) for v in result["landmarks"][30])  # the nose tip is drawn green
    assert tuple(after[y, x]) == (0, 255, 0)
    boxed = qlspec("run", "app.yaml", photo, "--roi", "10.4,20,200,230.5", "-o", tmp_path / "boxed", "--no-progress", cwd=root)
    assert boxed.returncode == 0, boxed.stderr
    assert json.loads((tmp_path / "boxed" / "landmarks.json").read_text())["images"][0]["roi"] == [10, 20, 200, 230]
    for bad in (["missing.png"], [str(root / "app.yaml")], [str(photo), "--roi", "5,5,1,1"]):
        r = qlspec("run", "app.yaml", *bad, "--no-progress", cwd=root)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr


def test_the_cpu_backend_builds_the_same_app_for_this_machine(built, tmp_path):
    import shutil

    root, _ = built
    shutil.copytree(root / "build", tmp_path / "build")
    (tmp_path / "app.yaml").write_text(tiny_spec(extra="target: {backend: cpu}\n"))
    r = qlspec("apply", "app.yaml", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "train     up to date" in r.stdout and "build     done" in r.stdout and "deploy    skipped" in r.stdout
    build = tmp_path / "build" / "tiny"
    rows = {row["rung"]: row for row in json.loads((build / "report.json").read_text())["rows"]}
    assert rows["CPU"]["mismatches"] == 0 and "ARMCL" not in rows
    assert np.array_equal(np.load(build / "verify" / "outputs.npz")["cpu"], np.load(build / "convert" / "outputs.npz")["graph"])
    app = json.loads((build / "verify" / "app.json").read_text())
    assert app["preprocess_mismatches"] == 0 and app["network_mismatches_vs_graph"] == 0
    assert "## CPU backend" in (build / "report.md").read_text()
    photo = tmp_path / "face.png"
    from PIL import Image

    Image.fromarray(np.load(build / "data" / "val.npz")["images"][1][..., ::-1]).save(photo)
    r = qlspec("run", "app.yaml", photo, "--no-progress", cwd=tmp_path)
    assert r.returncode == 0 and (build / "run" / "face_landmarks.png").is_file(), r.stdout + r.stderr


def test_build_without_the_toolchain_says_what_is_missing_and_keeps_the_last_build(built, tmp_path):
    root, _ = built
    binary = root / "build" / "tiny" / "build" / "armcl" / "bin" / "qlspec-net"
    before = binary.read_bytes()
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}  # no cmake, no cross compiler, no qemu
    r = subprocess.run(
        [sys.executable, "-m", "qlspec", "apply", "app.yaml", "--force", "build", "--no-progress"],
        capture_output=True,
        text=True,
        cwd=root,
        env=env,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cmake" in lines[0] and "qemu-aarch64" in lines[0] and "scripts/install.sh" in lines[0]
    assert binary.read_bytes() == before


def in_private_fs(root, script: str, size_kib: int):
    """Run bash `script` where $SMALL-mounted `root/small` is a fresh tmpfs of `size_kib` holding a copy
    of the built folder (a real full disk or read-only folder); `q` runs qlspec on it."""
    small = root / "small"
    small.mkdir(exist_ok=True)
    prologue = (
        f"mount -t tmpfs -o size={size_kib}k tmpfs {small} && cp -a {root / 'build'}/. {small}/ || exit 99\n"
        f'q() {{ $QLSPEC "$@" --build-dir {small}; }}\n'
    )
    return run_private(prologue + script, cwd=root)


def build_kib(root) -> int:
    return sum(f.stat().st_size for f in (root / "build").rglob("*") if f.is_file()) // 1024


def test_a_full_disk_is_one_line_and_keeps_every_built_stage(built):
    root, _ = built
    r = in_private_fs(
        root,
        """
q apply app.yaml --force quantise --no-progress > apply.out 2> apply.err; echo "apply=$?"
q plan app.yaml > plan.out 2>&1; echo "plan=$?"
cat apply.err plan.out
""",
        size_kib=build_kib(root) + 256,
    )
    assert "apply=2" in r.stdout and "plan=0" in r.stdout, r.stdout + r.stderr
    err = [line for line in r.stdout.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "No space left on device" in err[0], r.stdout
    assert "Traceback" not in r.stdout
    for stage in BUILT:
        assert f"{stage:<9} up to date" in r.stdout, r.stdout  # the failed stage left the built one in place


def test_a_read_only_build_folder_is_one_line(built):
    root, _ = built
    r = in_private_fs(
        root,
        f"""
mount -o remount,ro {root / "small"} || exit 98
q plan app.yaml > plan.out 2>&1; echo "plan=$?"
q apply app.yaml --force convert --no-progress > apply.out 2> apply.err; echo "apply=$?"
cat apply.err plan.out
""",
        size_kib=build_kib(root) + 256,
    )
    assert "plan=0" in r.stdout and "apply=2" in r.stdout, r.stdout + r.stderr
    err = [line for line in r.stdout.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "Read-only file system" in err[0], r.stdout
