"""The README's default application, end to end, as a user runs it (slow: about 15 minutes on 2 cores).

What it checks is what the issues promise a user: float training clearly beats the mean-parameter
predictor, 8-bit PACT stays close to float, every integer rung after TQ is bit-exact, a second apply
is a no-op, and at 4 bits PACT QAT beats PTQ calibration from the same float model.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "examples" / "3ddfa-synthetic" / "app.yaml"

FP_VS_BASELINE = 0.6  # FP NME must be below 60% of the mean predictor's
FQ_MARGIN_POINTS = 1.0  # 8-bit PACT NME within 1 NME point of FP


def qlspec(*args):
    return subprocess.run([sys.executable, "-m", "qlspec", *map(str, args)], capture_output=True, text=True, cwd=ROOT)


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    root = tmp_path_factory.mktemp("default-app")
    r = qlspec("apply", APP, "--build-dir", root, "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr
    return root / "3ddfa-synthetic"


def rungs(build):
    return {row["rung"]: row for row in json.loads((build / "report.json").read_text())["rows"]}


def test_float_training_beats_the_mean_predictor(build):
    r = rungs(build)
    assert r["FP"]["nme"] < FP_VS_BASELINE * r["MEAN"]["nme"], (r["FP"]["nme"], r["MEAN"]["nme"])


def test_pact_w8a8_stays_close_to_float(build):
    r = rungs(build)
    assert r["FQ"]["algorithm"] == "pact" and r["FQ"]["bits"] == {"weights": 8, "activations": 8}
    assert r["FQ"]["nme"] <= r["FP"]["nme"] + FQ_MARGIN_POINTS


def test_integer_rungs(build):
    r = rungs(build)
    assert abs(r["TQ"]["nme"] - r["FQ"]["nme"]) < 0.05  # measured 0.001 (FQ 7.444, TQ 7.443); issue 10 asks 0.05
    assert r["TQ"]["mismatches"] == 0 and r["TQ"]["nme"] == r["FQI"]["nme"]  # FQI is the exported arithmetic
    assert r["ONNX"]["mismatches"] == 0 and r["GRAPH"]["mismatches"] == 0
    assert r["ONNX"]["n"] == r["GRAPH"]["n"] == r["TQ"]["n"] == r["ARMCL"]["n"] == 1000
    assert r["ARMCL"]["mismatches"] == 0 and r["ARMCL"]["nme"] == r["GRAPH"]["nme"]  # the ARM-CL app under qemu
    for flavour in ("deeploy", "dory"):
        assert (build / "export" / flavour / "network.onnx").is_file()


def test_the_ai_application_matches_the_python_pipeline(build):
    app = json.loads((build / "verify" / "app.json").read_text())
    assert app["photos"] == 64 and app["preprocess_mismatches"] == 0 and app["network_mismatches_vs_graph"] == 0
    assert app["landmark_max_abs_diff_px"] <= app["landmark_tolerance_px"]
    md = (build / "report.md").read_text()
    assert f"0 of {64 * 3 * 120 * 120:,} input codes differ from the Python pipeline's" in md


def test_every_requantiser_fits_int32_with_headroom(build):
    info = json.loads((build / "export" / "export.json").read_text())
    assert info["int32_check"]["mismatches"] == 0 and info["int32_check"]["min_headroom"] >= 2.0
    fits = json.loads((build / "export" / "requantisers.json").read_text())
    assert len(fits) == 28 and all(f["observed_headroom"] >= 2.0 for f in fits)
    md = (build / "report.md").read_text()
    assert "## Requantisers (int32)" in md and "onnxruntime running the DORY file" in md


def test_second_apply_is_a_no_op_in_seconds(build):
    started = time.perf_counter()
    r = qlspec("apply", APP, "--build-dir", build.parent, "--no-progress")
    assert r.returncode == 0
    assert time.perf_counter() - started < 60
    assert "running" not in r.stdout


def test_pact_beats_ptq_at_4_bits(build):
    r = qlspec("compare", APP, "--build-dir", build.parent, "--bits", "4", "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr
    rows = {row["algorithm"]: row for row in json.loads((build / "compare" / "compare.json").read_text())["rows"]}
    assert rows["pact"]["nme"] < rows["ptq"]["nme"], rows
