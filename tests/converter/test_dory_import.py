"""DORY-flavour graphs built with onnx.helper: against an independent numpy formula, and against
onnxruntime where float32 is exact (small values). Plus the Deeploy attribute spellings."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from onnx import helper, numpy_helper
from onnx_builders import OnnxGraph, mobilenet_like, ort_run

from qlspec.engine import run_graph
from qlspec.errors import OnnxImportError
from qlspec.graph.passes import optimise
from qlspec.onnx_import import import_onnx


def test_mobilenet_like_equals_onnxruntime_and_optimises_to_fused_ops(write_onnx):
    rng = np.random.default_rng(0)
    model, shape = mobilenet_like(rng, size=16, width=8, blocks=2, small=True)
    g0 = import_onnx(write_onnx(model), input_types={"input": (8, False)})
    g = optimise(g0)
    x = rng.integers(0, 16, (3, *shape[1:]))
    (want,) = ort_run(model, {"input": x})
    assert np.array_equal(run_graph(g0, {"input": x})[g0.outputs[0]], want)
    assert np.array_equal(run_graph(g, {"input": x})[g.outputs[0]], want)
    ops = g.op_counts()
    assert "Clip" not in ops and "Conv" not in ops and ops["ConvRequant"] == 5


def test_requant_chain_matches_the_floor_formula(write_onnx):
    rng = np.random.default_rng(1)
    b = OnnxGraph()
    w = rng.integers(-128, 128, (4, 3, 3, 3))
    mul = rng.integers(1, 2000, (4, 1, 1))
    add = rng.integers(-(2**20), 2**20, (4, 1, 1))
    y = b.dory_requant(b.conv("x", w, pads=(1, 1, 1, 1)), mul, add, shift=19, lo=0, hi=255)
    g = optimise(import_onnx(write_onnx(b.model({"x": (1, 3, 6, 6)}, [y])), input_types={"x": (8, False)}))
    x = rng.integers(0, 256, (1, 3, 6, 6))
    acc = (
        torch.nn.functional.conv2d(torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64), padding=1)
        .numpy()
        .astype(np.int64)
    )
    want = np.clip((acc * mul + add) // 2**19, 0, 255)  # DORY: add already holds the half
    assert g.op_counts() == {"ConvRequant": 1}
    assert np.array_equal(run_graph(g, {"x": x})[y], want)


def test_residual_adder_matches_the_dory_formula(write_onnx):
    rng = np.random.default_rng(2)
    b = OnnxGraph()
    a1 = b.dory_requant("x", np.full((2, 1, 1), 3), np.full((2, 1, 1), 4), shift=3, lo=0, hi=255)
    a2 = b.dory_requant("x", np.full((2, 1, 1), 5), np.full((2, 1, 1), 0), shift=2, lo=0, hi=255)
    p = dict(
        in1_mul=245015,
        in1_add=262144,
        in1_shift=19,
        in1_n_levels=256,
        in1_rq=1,
        in2_mul=265342,
        in2_add=262144,
        in2_shift=19,
        in2_n_levels=256,
        in2_rq=1,
        out_signed=0,
        out_mul=1,
        out_add=0,
        out_shift=0,
        out_n_levels=256,
        out_rq=0,
    )
    y = b.dory_adder(a1, a2, p)
    g0 = import_onnx(write_onnx(b.model({"x": (1, 2, 4, 4)}, [y])), input_types={"x": (8, False)})
    g = optimise(g0)
    x = rng.integers(0, 256, (1, 2, 4, 4))
    t1 = np.clip((x * 3 + 4) // 8, 0, 255)
    t2 = np.clip((x * 5) // 4, 0, 255)
    want = np.clip((t1 * 245015 + 262144) // 2**19 + (t2 * 265342 + 262144) // 2**19, 0, 255)
    assert "RequantAdd" in g.op_counts()
    assert np.array_equal(run_graph(g0, {"x": x})[y], want)
    assert np.array_equal(run_graph(g, {"x": x})[y], want)


def test_average_pool_is_summed_then_requantised(write_onnx):
    rng = np.random.default_rng(3)
    b = OnnxGraph()
    p = b.node("AveragePool", ["x"], kernel_shape=[2, 2], strides=[2, 2])
    y = b.dory_requant(p, np.full((3, 1, 1), 4 * 12), np.full((3, 1, 1), 8), shift=4, lo=0, hi=255)
    model = b.model({"x": (1, 3, 4, 4)}, [y])
    g = optimise(import_onnx(write_onnx(model), input_types={"x": (8, False)}))
    x = rng.integers(0, 256, (1, 3, 4, 4))
    s = x.reshape(1, 3, 2, 2, 2, 2).sum(axis=(3, 5))
    want = np.clip((s * 12 + 8) // 16, 0, 255)
    assert np.array_equal(run_graph(g, {"x": x})[y], want)
    assert np.array_equal(ort_run(model, {"x": x})[0], want)  # k = 4: the float mean is exact


def test_average_pool_needs_a_mul_multiple_of_the_window(write_onnx):
    b = OnnxGraph()
    p = b.node("AveragePool", ["x"], kernel_shape=[3, 3])
    y = b.dory_requant(p, 10, 0, shift=4)
    with pytest.raises(OnnxImportError, match="not a multiple of 9"):
        import_onnx(write_onnx(b.model({"x": (1, 1, 3, 3)}, [y])))


def _deeploy_rqs(attrs_kind: str, domain: str):
    b = OnnxGraph()
    mul, add = b.const("mul", [[[300]], [[-7]]]), b.const("add", [[[5]], [[100]]])
    attrs: dict[str, Any]
    if attrs_kind == "tensor":
        attrs = dict(
            div=numpy_helper.from_array(np.array(256.0, np.float32)),
            n_levels_out=numpy_helper.from_array(np.array([256.0], np.float32)),
            signed=numpy_helper.from_array(np.array([1.0], np.float32)),
        )
    else:
        attrs = dict(div=256, n_levels=256, signed=1)
    y = b.node("RequantShift", ["x", mul, add], domain=domain, **attrs)
    model = b.model({"x": (1, 2, 3, 3)}, [y])
    model.opset_import.append(helper.make_opsetid("PACTOps", 1))
    return model, y


@pytest.mark.parametrize(
    "attrs_kind,domain",
    [("tensor", ""), ("int", "PACTOps"), ("int", ""), ("tensor", "PACTOps"), ("tensor", "ai.onnx.contrib"), ("int", "ai.onnx.contrib")],
)
def test_deeploy_spellings_agree(write_onnx, attrs_kind, domain):
    model, y = _deeploy_rqs(attrs_kind, domain)
    g = import_onnx(write_onnx(model))
    x = np.arange(18).reshape(1, 2, 3, 3) * 37 - 300
    mul = np.array([300, -7]).reshape(2, 1, 1)
    add = np.array([5, 100]).reshape(2, 1, 1)
    want = np.clip((x * mul + add + 128) // 256, -128, 127)
    assert np.array_equal(run_graph(g, {"x": x})[y], want)


def test_only_requant_shift_comes_from_a_custom_domain(write_onnx):
    b = OnnxGraph()
    y = b.node("Relu", ["x"], domain="ai.onnx.contrib")
    model = b.model({"x": (1, 2, 3, 3)}, [y])
    with pytest.raises(OnnxImportError, match=r"unsupported op ai.onnx.contrib::Relu .*only RequantShift"):
        import_onnx(write_onnx(model))
