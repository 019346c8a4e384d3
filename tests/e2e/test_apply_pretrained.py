"""Bring your own model: a checkpoint in 3DDFA_V2's layout, used as it is (training.epochs 0), up the
ladder through PTQ and through PACT QAT, on a tiny spec.

The checkpoint is written here as 3DDFA_V2 ships its weights (``{'epoch', 'state_dict'}``,
DataParallel's ``module.`` prefix, the head as ``fc_param``, the training-only ``fc_lm`` head) from a
MobileNet-V1 x0.25 whose BatchNorm statistics come from images, with its output normalisation as
3DDFA's ``param_mean_std_62d_120x120.pkl`` (a pickled dict of float32 (62,) arrays).
"""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import torch

from qlspec.data.synthetic import render_synthetic
from qlspec.face.params import ParamStats
from qlspec.nets import registry
from qlspec.preprocess import InputTransform
from qlspec.spec.models import Preprocess

SPEC = """\
apiVersion: qlspec/v1
name: NAME
extends: [networks/3ddfa-mb05.yaml, QUANT]
network: {width: 0.25, pretrained: mb025_120x120.pth, param_stats: STATS}
data: {kind: synthetic, train: 32, val: 16, seed: 5}
training: {epochs: 0, batch_size: 16, threads: 1}
quantisation: {ptq: {samples: 32}, schedule: {epochs: 1, freeze_clip_at: null, lr: 0.0001}}
target: {backend: reference}
verify: {samples: 8}
"""


def qlspec(*args, cwd):
    return subprocess.run([sys.executable, "-m", "qlspec", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def v2_layout(net: torch.nn.Module, width: int) -> dict:
    """`net`'s tensors as 3DDFA_V2 saves them, with a 136-output landmark head it never loads."""
    state = {"module." + ("fc_param." + k[3:] if k.startswith("fc.") else k): v.clone() for k, v in net.state_dict().items()}
    state["module.fc_lm.weight"], state["module.fc_lm.bias"] = torch.randn(136, width), torch.randn(136)
    return {"epoch": 50, "state_dict": state}


def as_trained(width: float) -> torch.nn.Module:
    """A network whose BatchNorm statistics and head are not the initial ones (so a moved one shows)."""
    torch.manual_seed(0)
    net = registry.build("3ddfa-mobilenet-v1", width)
    x = torch.nn.functional.avg_pool2d(torch.rand(64, 3, 120, 120, generator=torch.Generator().manual_seed(1)) * 2 - 1, 5, 1, 2)
    net.train()
    with torch.no_grad():
        for i in range(0, 64, 32):
            net(x[i : i + 32])
        cast(torch.nn.Linear, net.get_submodule("fc")).weight.mul_(0.05)  # outputs of the size of normalised parameters
    return net.eval()


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    root = tmp_path_factory.mktemp("byom")
    net = as_trained(0.25)
    torch.save(v2_layout(net, net.fc.in_features), root / "mb025_120x120.pth")
    drawn = ParamStats.from_params(render_synthetic(48, seed=9).params)  # plausible, and not the data set's own
    stats = {"mean": drawn.mean * np.float32(1.1), "std": drawn.std * np.float32(1.5)}
    with open(root / "param_mean_std_62d_120x120.pkl", "wb") as f:
        pickle.dump(stats, f)
    inline = f"{{mean: {json.dumps(stats['mean'].tolist())}, std: {json.dumps(stats['std'].tolist())}}}"
    runs = {}
    for name, quant, given in (
        ("byom-ptq", "quant/ptq-w8a8.yaml", "param_mean_std_62d_120x120.pkl"),
        ("byom-qat", "quant/pact-w8a8.yaml", inline),
    ):
        (root / f"{name}.yaml").write_text(SPEC.replace("NAME", name).replace("QUANT", quant).replace("STATS", given))
        r = qlspec("apply", f"{name}.yaml", "--no-progress", "--until", "convert", cwd=root)
        assert r.returncode == 0, r.stdout + r.stderr
        runs[name] = r
    return root, net, stats, runs


@pytest.mark.parametrize("name", ["byom-ptq", "byom-qat"])
def test_training_is_skipped_and_no_batchnorm_statistic_moves(ladder, name):
    root, net, _, runs = ladder
    assert "as it is (training.epochs 0: no training step" in runs[name].stdout
    assert json.loads((root / "build" / name / "train" / "history.json").read_text()) == []
    saved = torch.load(root / "build" / name / "train" / "model.pt", weights_only=True)
    own = net.state_dict()
    bn = [k for k in own if k.endswith(("running_mean", "running_var"))]
    assert len(bn) == 2 * 27 and all(own[k].abs().sum() > 0 for k in bn)
    for key in own:
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(saved[key], own[key]), key


@pytest.mark.parametrize("name", ["byom-ptq", "byom-qat"])
def test_the_fp_rung_is_the_checkpoints_own_outputs_under_its_own_normalisation(ladder, name):
    root, net, stats, _ = ladder
    build = root / "build" / name
    val = np.load(build / "data" / "val.npz")["images"]
    torch.set_num_threads(1)
    with torch.no_grad():
        want = net(InputTransform.from_spec(Preprocess())(val)).numpy()
    assert np.array_equal(np.load(build / "train" / "outputs.npz")["z"], want)
    with np.load(build / "data" / "param_stats.npz") as written:  # the network's, not the synthetic set's
        assert np.array_equal(written["mean"], stats["mean"]) and np.array_equal(written["std"], stats["std"])


@pytest.mark.parametrize("name", ["byom-ptq", "byom-qat"])
def test_the_ladder_is_exact_from_the_integer_evaluation_to_the_converted_graph(ladder, name):
    root, _, _, runs = ladder
    for stage in ("data", "train", "quantise", "export", "convert"):
        assert f"{stage:<9} done" in runs[name].stdout
    rungs = {
        row["rung"]: row
        for stage in ("train", "quantise", "export", "convert")
        for row in json.loads((root / "build" / name / stage / "rungs.json").read_text())
    }
    assert {"FP", "FQ", "FQI", "TQ", "ONNX", "GRAPH"} <= set(rungs)
    assert rungs["FQ"]["algorithm"] == ("ptq" if name == "byom-ptq" else "pact") and rungs["FQ"]["max_abs_diff"] > 0
    assert rungs["TQ"]["mismatches"] == rungs["ONNX"]["mismatches"] == rungs["GRAPH"]["mismatches"] == 0
    assert rungs["TQ"]["n"] == rungs["GRAPH"]["n"] == 8


def test_qat_fine_tunes_from_the_checkpoint(ladder):
    root, _, _, _ = ladder
    history = json.loads((root / "build" / "byom-qat" / "quantise" / "history.json").read_text())
    assert len(history) == 1
    qat = torch.load(root / "build" / "byom-qat" / "quantise" / "fq_state.pt", weights_only=True)
    ptq_float = torch.load(root / "build" / "byom-ptq" / "train" / "model.pt", weights_only=True)
    # one epoch at lr 1e-4 from the checkpoint stays near it (a network from scratch would not)
    w = next(k for k in qat if k.endswith("conv1.weight"))
    rel = (qat[w] - ptq_float["conv1.weight"]).norm() / ptq_float["conv1.weight"].norm()
    assert 0 < rel < 0.05, float(rel)


# --------------------------------------------------------------------------------------------------
# the shipped example


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "3ddfa-pretrained" / "app.yaml"


def test_the_shipped_example_names_exactly_the_paths_to_fill_in(tmp_path):
    r = qlspec("validate", EXAMPLE, cwd=EXAMPLE.parents[2])
    assert r.returncode == 2 and r.stderr.count("\n") == 2, r.stderr
    lines = EXAMPLE.read_text().splitlines()
    for field, line in zip(("pretrained", "param_stats"), r.stderr.splitlines()):
        row = next(i for i, text in enumerate(lines, 1) if re.match(rf"\s+{field}: /path/to/", text))
        col = lines[row - 1].index("/path/to/") + 1
        assert line.startswith(f"error: examples/3ddfa-pretrained/app.yaml:{row}:{col}: network.{field}: file not found: /path/to/")
        assert line.endswith("(a placeholder: fill in the path of your own copy)")


def test_the_example_filled_in_validates_and_a_checkpoint_that_does_not_fit_is_located(tmp_path):
    net = registry.build("3ddfa-mobilenet-v1", 0.5)
    torch.save(v2_layout(net, net.fc.in_features), tmp_path / "mb05_120x120.pth")
    with open(tmp_path / "param_mean_std_62d_120x120.pkl", "wb") as f:
        pickle.dump({"mean": np.zeros(62, np.float32), "std": np.ones(62, np.float32)}, f)
    text = EXAMPLE.read_text().replace("/path/to/", "")
    (tmp_path / "app.yaml").write_text(text)
    r = qlspec("validate", "app.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    small = registry.build("3ddfa-mobilenet-v1", 0.25)
    torch.save(v2_layout(small, small.fc.in_features), tmp_path / "mb05_120x120.pth")  # the wrong width
    for command in ("validate", "plan"):
        r = qlspec(command, "app.yaml", cwd=tmp_path)
        row, col = next((i, t.index("mb05") + 1) for i, t in enumerate(text.splitlines(), 1) if "pretrained: mb05" in t)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert (
            f"app.yaml:{row}:{col}: network.pretrained: does not fit the network: shape mismatches (file vs network): "
            "conv1.weight (8, 3, 3, 3) vs (16, 3, 3, 3)"
        ) in r.stderr
        assert not (tmp_path / "build").exists()  # refused before any stage
