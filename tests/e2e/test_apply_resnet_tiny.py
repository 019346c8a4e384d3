"""The residual network end to end: a tiny width of the ResNet-22 example, through every built stage
(the ARM-CL build and its bit-exact run under qemu included)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

TINY = """\
apiVersion: qlspec/v1
name: tiny-res
extends: [boards/rpi4.yaml, networks/3ddfa-resnet22-w0125.yaml]
network: {arch: 3ddfa-resnet22, width: 0.0625}
data: {kind: synthetic, train: 96, val: 32, seed: 3}
training: {epochs: 1, batch_size: 32, threads: 2}
quantisation: {algorithm: pact, schedule: {epochs: 1, freeze_clip_at: null, lr: 0.001}}
verify: {samples: 16}
"""


def test_resnet_ladder_is_bit_exact_from_tq_down(tmp_path):
    (tmp_path / "app.yaml").write_text(TINY)
    r = subprocess.run([sys.executable, "-m", "qlspec", "apply", "app.yaml", "--no-progress"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    build = tmp_path / "build" / "tiny-res"
    assert json.loads((build / "train" / "network.json").read_text())["arch"] == "3ddfa-resnet22"
    rungs = {row["rung"]: row for row in json.loads((build / "report.json").read_text())["rows"]}
    assert rungs["ONNX"]["mismatches"] == 0 and rungs["GRAPH"]["mismatches"] == 0
    assert rungs["ONNX"]["n"] == rungs["TQ"]["n"] == 16
    assert rungs["ARMCL"]["mismatches"] == 0 and rungs["ARMCL"]["n"] == 16  # the residual adds in ARM-CL C++, under qemu
    assert rungs["TQ"]["per_layer"]["max_lsb"] <= 1
    nodes = json.loads((build / "export" / "export.json").read_text())["nodes"]
    assert nodes["Add"] == 10 and nodes["Quantise"] == 1  # ten residual adds, and the input quantiser in the graph
    summary = (build / "convert" / "summary.txt").read_text()
    assert "Add x10" in summary
