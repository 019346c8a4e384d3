"""load_model / read_inputs / write_outputs, and the summary."""

from __future__ import annotations

import numpy as np
import pytest
from onnx_builders import mobilenet_like

from qlspec.engine import run_graph
from qlspec.errors import GraphError
from qlspec.graph.io import save_graph
from qlspec.graph.summary import summarise
from qlspec.modelio import load_model, read_inputs, write_outputs
from qlspec.onnx_import import import_onnx


@pytest.fixture
def onnx_path(write_onnx):
    model, _ = mobilenet_like(np.random.default_rng(0), size=16, width=8, blocks=2, small=True)
    return write_onnx(model)


def test_load_model_accepts_onnx_and_graph_folders(onnx_path, tmp_path):
    g = load_model(onnx_path)
    assert "ConvRequant" in g.op_counts()  # imported, then optimised
    assert load_model(save_graph(g, tmp_path / "g")) == g
    with pytest.raises(GraphError, match="expected a graph folder"):
        load_model(tmp_path / "nothing.txt")


def test_read_inputs_by_name_then_by_order(onnx_path, tmp_path):
    g = load_model(onnx_path)
    x = np.random.default_rng(1).integers(0, 16, (2, 3, 16, 16))
    np.savez(tmp_path / "named.npz", other=np.zeros(3), input=x)
    np.savez(tmp_path / "ordered.npz", x, np.zeros(3))
    for name in ("named.npz", "ordered.npz"):
        assert np.array_equal(read_inputs(tmp_path / name, g)["input"], x)
    np.savez(tmp_path / "empty.npz")
    with pytest.raises(GraphError, match="holds 0 array"):
        read_inputs(tmp_path / "empty.npz", g)
    with pytest.raises(GraphError, match="no such file"):
        read_inputs(tmp_path / "missing.npz", g)


def test_write_outputs_round_trips(onnx_path, tmp_path):
    g = load_model(onnx_path)
    x = np.random.default_rng(2).integers(0, 16, (1, 3, 16, 16))
    out = run_graph(g, {"input": x})
    p = write_outputs(tmp_path / "sub" / "out.npz", out)
    with np.load(p) as z:
        assert list(z.files) == list(g.outputs) and np.array_equal(z[g.outputs[0]], out[g.outputs[0]])


def test_inputs_out_of_the_declared_range_are_refused(onnx_path):
    g = import_onnx(onnx_path, input_types={"input": (8, False)})
    with pytest.raises(GraphError, match="input input: values .* outside the declared u8"):
        run_graph(g, {"input": np.full((1, 3, 16, 16), -1)})


def test_summary_counts_macs_weights_and_memory(onnx_path):
    g0 = import_onnx(onnx_path, input_types={"input": (8, False)})
    s = summarise(g0)
    conv0 = next(n for n in g0.nodes if n.op == "Conv")
    _, cg, kh, kw = g0.info(conv0.inputs[1]).shape
    assert s.macs > g0.info(conv0.outputs[0]).size * cg * kh * kw
    assert s.weight_bytes == sum(a.nbytes for a in g0.constants.values())
    assert s.activation_bytes_planned < s.activation_bytes_naive
    assert s.op_counts["Conv"] == 5
    text = s.to_text()
    assert "MACs" in text and "memory plan" in text and len(text.splitlines()) <= 6
    assert s.to_dict()["macs"] == s.macs
