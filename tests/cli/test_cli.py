"""The CLI through its real entry point: exit codes and messages together."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from shared_exports import shared_exports


def qlspec(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "qlspec", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_help_lists_every_command():
    r = qlspec("--help")
    assert r.returncode == 0, r.stderr
    for verb in ("validate", "plan", "apply", "diff", "new", "schema", "convert", "infer"):
        assert verb in r.stdout


def test_validate_ok_and_errors(spec_file):
    good = spec_file("name: ok-app\nextends: [boards/rpi4.yaml]\n")
    r = qlspec("validate", good)
    assert r.returncode == 0 and "valid qlspec/v1 spec for 'ok-app' (extends boards/rpi4.yaml)" in r.stdout
    bad = spec_file("name: x\ntraining:\n  epoch: 3\n  batch_size: 0\n", name="bad.yaml")
    r = qlspec("validate", bad)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in r.stderr
    assert lines[0].endswith("bad.yaml:3:3: training.epoch: unknown key 'epoch' (did you mean 'epochs'?)")
    assert lines[1].endswith("bad.yaml:4:15: training.batch_size: must be >= 1 (got 0)")


def test_schema_prints_json_schema():
    r = qlspec("schema")
    assert r.returncode == 0
    schema = json.loads(r.stdout)
    assert schema["additionalProperties"] is False and "quantisation" in schema["properties"]


def test_diff_reports_changes_with_invalidated_stages_and_masks_secrets(spec_file, repo_root):
    old = spec_file((repo_root / "examples" / "3ddfa-synthetic" / "app.yaml").read_text(), name="old.yaml")
    new = spec_file(
        "name: 3ddfa-synthetic\nextends: [old.yaml]\ntraining: {epochs: 99}\ndeploy: {password: other-pass}\n# a comment\n", name="new.yaml"
    )
    r = qlspec("diff", old, new)
    assert r.returncode == 0, r.stderr
    epochs = next(line for line in r.stdout.splitlines() if line.startswith("training.epochs: "))
    assert epochs.endswith("-> 99   invalidates: train, quantise, compare, export, convert, build, verify, deploy")
    assert 'deploy.password: null -> "<secret>"   invalidates: none' in r.stdout and "other-pass" not in r.stdout
    assert "2 change(s)" in r.stdout


def test_diff_ignores_order_comments_and_spelled_out_defaults(spec_file):
    a = spec_file("name: a\ntraining: {epochs: 8, batch_size: 64}\n", name="a.yaml")
    b = spec_file("# same\ntraining:\n  batch_size: 64\n  epochs: 8\n  seed: 0\nname: a\n", name="b.yaml")
    r = qlspec("diff", a, b)
    assert r.returncode == 0 and r.stdout.strip() == "no semantic changes"


def test_new_scaffolds_a_valid_app(tmp_path):
    r = qlspec("new", "--no-input", "name=my-app", "quantisation=ptq", "-o", tmp_path)
    assert r.returncode == 0, r.stderr
    app = tmp_path / "my-app" / "app.yaml"
    assert (tmp_path / "my-app" / "README.md").is_file()
    v = qlspec("validate", app)
    assert v.returncode == 0, v.stderr
    assert "quant/ptq-w8a8.yaml" in app.read_text()


def test_new_rejects_bad_names_and_keys(tmp_path):
    r = qlspec("new", "--no-input", "name=Bad Name", "-o", tmp_path)
    assert r.returncode == 2 and "name 'Bad Name' must be lower-case" in r.stderr
    r = qlspec("new", "--no-input", "colour=red", "-o", tmp_path)
    assert r.returncode == 2 and "unknown template value(s) colour" in r.stderr
    assert not any(tmp_path.iterdir())


def test_plan_on_a_bad_spec_exits_2(spec_file):
    r = qlspec("plan", spec_file("name: x\ndata: {kind: imagenet}\n"))
    assert r.returncode == 2
    assert "app.yaml:2:14: data.kind: must be one of 'synthetic', '300w-lp' (got 'imagenet')" in r.stderr


def test_an_unknown_network_arch_is_located_and_lists_the_registry(spec_file):
    r = qlspec("validate", spec_file("name: x\nnetwork:\n  arch: resnet50\n"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "app.yaml:3:9: network.arch: must be one of '3ddfa-mobilenet-v1', '3ddfa-resnet22' (got 'resnet50')" in r.stderr


def test_new_offers_what_the_spec_library_holds(tmp_path):
    r = qlspec("new", "--no-input", "name=res", "network=3ddfa-resnet22-w0125", "-o", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "networks/3ddfa-resnet22-w0125.yaml" in (tmp_path / "res" / "app.yaml").read_text()
    assert qlspec("validate", tmp_path / "res" / "app.yaml").returncode == 0
    r = qlspec("new", "--no-input", "name=b", "board=pi5", "-o", tmp_path)
    assert r.returncode == 2 and "board 'pi5' is not in the spec library (choose from: rpi4)" in r.stderr


def test_convert_takes_the_input_precision_from_a_side_json_or_the_flags(tmp_path, repo_root):
    shared = shared_exports() / "deeploy" / "Models_miniMobileNet" / "network.onnx"
    if not shared.is_file():
        pytest.skip(f"shared QuantLab exports not found at {shared.parent}")
    model = tmp_path / "network.onnx"
    model.write_bytes(shared.read_bytes())
    r = qlspec("convert", model, "-o", tmp_path / "g0")
    assert r.returncode == 0 and "inputs input i32[1x3x8x8]" in r.stdout  # nothing says otherwise
    assert "input precision from default (nothing declares it)" in r.stdout
    for given, shown in (("int8", "i8"), ("uint8", "u8"), ("int32", "i32")):
        r = qlspec("convert", model, "-o", tmp_path / "g1", "--input", given)
        assert r.returncode == 0 and f"inputs input {shown}[1x3x8x8]" in r.stdout and "from --input" in r.stdout
    (tmp_path / "config_network.json").write_text(json.dumps({"input_bits": 8, "input_signed": False}))
    r = qlspec("convert", model, "-o", tmp_path / "g2")
    assert r.returncode == 0 and "inputs input u8[1x3x8x8]" in r.stdout, r.stdout
    assert f"input precision from {tmp_path / 'config_network.json'}" in r.stdout
    r = qlspec("convert", model, "-o", tmp_path / "g3", "--input", "int8")  # the flag wins over a side file beside it
    assert r.returncode == 0 and "inputs input i8[1x3x8x8]" in r.stdout
    side = tmp_path / "elsewhere" / "dory-net.json"  # --config names a side file of any name, anywhere
    side.parent.mkdir()
    side.write_text(json.dumps({"input_bits": 32, "input_signed": True}))
    r = qlspec("convert", model, "-o", tmp_path / "g4", "--config", side)
    assert r.returncode == 0 and "inputs input i32[1x3x8x8]" in r.stdout and f"from {side}" in r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--input", "uint8", "--config", "side.json"], "error: qlspec: --input and --config both give the input precision: use one"),
        (["--input", "u8"], "error: --input: unknown input precision 'u8' (choose from uint8, int8, int32)"),
        (["--config", "nope.json"], "error: nope.json: no such file"),
        (["--config", "empty.json"], "error: empty.json: declares no input precision"),
    ],
)
def test_convert_refuses_contradictory_or_unknown_input_precision(tmp_path, args, message):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["output"], axis=1)],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4])],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)]), tmp_path / "network.onnx")
    (tmp_path / "side.json").write_text(json.dumps({"input_bits": 8, "input_signed": False}))
    (tmp_path / "empty.json").write_text("{}")
    for command in (["convert", "network.onnx", "-o", "g"], ["infer", "network.onnx", "--inputs", "in.npz", "-o", "o.npz"]):
        r = qlspec(*command, *args, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith(message), r.stderr
        assert not (tmp_path / "g").exists() and not (tmp_path / "o.npz").exists()


def test_infer_maps_outputs_to_a_reference_by_the_models_names_else_in_order(tmp_path, repo_root):
    case = shared_exports() / "deeploy" / "Kernels_Integer_Add_Regular_RQ"
    if not case.is_dir():
        pytest.skip(f"shared QuantLab exports not found at {case}")
    # the reference names its arrays arr_0, arr_1 (in order); the model's output is 'output'

    def infer(expect):
        args = ("--input", "int8", "--inputs", case / "inputs.npz", "-o", tmp_path / "o.npz", "--expect", expect)
        return qlspec("infer", case / "network.onnx", *args)

    r = infer(case / "outputs.npz")
    assert r.returncode == 0, r.stderr
    assert f"output vs {case / 'outputs.npz'}[arr_0]: 0 of {128 * 128} values differ" in r.stdout
    assert np.load(tmp_path / "o.npz").files == ["output"]
    wrong = np.load(case / "outputs.npz")["arr_0"].copy()
    wrong[0, 0, :3] += 1
    np.savez(tmp_path / "ref.npz", decoy=np.zeros(3), output=wrong)  # by name, though not first
    r = infer(tmp_path / "ref.npz")
    assert r.returncode == 1 and f"[output]: 3 of {128 * 128} values differ" in r.stdout, r.stdout + r.stderr
