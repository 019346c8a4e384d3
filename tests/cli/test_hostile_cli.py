"""The CLI under hostile names, paths and files: one located line and exit 2, nothing printed raw."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from private_fs import run_private
from test_npz import announcing

from qlspec.graph.io import save_graph
from qlspec.graph.ir import GraphBuilder, Node, TensorInfo

ESC = "\x1b[31m"


def qlspec(*args, cwd):
    return subprocess.run([sys.executable, "-m", "qlspec", *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def graph_dir(tmp_path):
    b = GraphBuilder("g")
    b.add_input("in", TensorInfo((1, 4), 8, True))
    b.add_node(Node.make("Flatten", f"f{ESC}", ["in"], [f"out{ESC}red[/x]"], axis=1))
    save_graph(b.build([f"out{ESC}red[/x]"]), tmp_path / "g")
    np.savez(tmp_path / "in.npz", x=np.zeros((1, 4), np.int64))
    return tmp_path


def test_names_and_paths_print_verbatim_without_control_characters(graph_dir):
    (graph_dir / "r[").mkdir()
    r = qlspec("infer", "g", "--inputs", "in.npz", "-o", "r[/x].npz", cwd=graph_dir)
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "out\\x1b[31mred[/x]: int8 (1, 4)" in r.stdout and "wrote r[/x].npz" in r.stdout
    assert (graph_dir / "r[" / "x].npz").is_file()


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("empty.npz", b"", "not a readable .npz file"),
        ("garbage.npz", b"PK\x03\x04 not really a zip", "not a readable .npz file"),
        ("in.npy", None, "an .npy array, not an .npz"),
        ("bomb.npz", announcing((2**40,), name="in"), "array 'in': its header announces (1099511627776,) int64"),
    ],
)
def test_unusable_input_files_are_one_located_line(graph_dir, name, content, message):
    if content is None:
        np.save(graph_dir / name, np.zeros((1, 4)))
    else:
        (graph_dir / name).write_bytes(content)
    r = qlspec("infer", "g", "--inputs", name, "-o", "o.npz", cwd=graph_dir)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and f"error: {name}: {message}" in r.stderr, r.stderr


def test_unwritable_outputs_are_one_line_and_exit_2(graph_dir):
    (graph_dir / "d").mkdir()
    r = qlspec("infer", "g", "--inputs", "in.npz", "-o", "d", cwd=graph_dir)
    assert r.returncode == 2 and "error: d: is a folder" in r.stderr
    r = qlspec("schema", "-o", graph_dir / "missing" / "dir" / "schema.json", cwd=graph_dir)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "No such file or directory" in r.stderr
    (graph_dir / "ro").mkdir()
    r = run_private(
        'mount -t tmpfs -o ro,size=64k tmpfs ro || exit 99\n$QLSPEC infer g --inputs in.npz -o ro/o.npz; echo "rc=$?"', cwd=graph_dir
    )
    assert "rc=2" in r.stdout, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and "Read-only file system" in r.stderr, r.stderr


def test_an_error_line_shows_control_characters_escaped(tmp_path):
    (tmp_path / "app.yaml").write_text(f'name: x\ntraining: {{"ep{ESC}ochs": 2}}\n')
    r = qlspec("validate", "app.yaml", cwd=tmp_path)
    assert r.returncode == 2 and "\x1b" not in r.stderr
    assert Path(tmp_path / "app.yaml").is_file()


@pytest.mark.parametrize(
    "side",
    [
        '{"input_bits": "abc", "input_signed": true}',
        '{"input_bits": null, "input_signed": true}',
        '{"input_bits": NaN, "input_signed": true}',
        '{"input_bits": 8, "input_signed": "yes"}',
        '{"input_bits": 1e400, "input_signed": 1}',
        b'\xff\xfe{"input_bits": 8}',
        "[[[" * 5000,
    ],
)
def test_bad_dory_side_json_is_one_located_line(tmp_path, side):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["output"], axis=1)],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4])],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)]), tmp_path / "network.onnx")
    (tmp_path / "config_network.json").write_bytes(side if isinstance(side, bytes) else side.encode())
    r = qlspec("convert", "network.onnx", "-o", "out", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "config_network.json" in r.stderr, r.stderr


def test_a_graph_folder_without_outputs_is_refused_not_run(graph_dir):
    import json

    doc = json.loads((graph_dir / "g" / "graph.json").read_text())
    doc["outputs"] = []
    (graph_dir / "g" / "graph.json").write_text(json.dumps(doc))
    r = qlspec("infer", "g", "--inputs", "in.npz", "-o", "e.npz", cwd=graph_dir)
    assert r.returncode == 2 and "error: g: the graph has no outputs" in r.stderr and not (graph_dir / "e.npz").exists()
