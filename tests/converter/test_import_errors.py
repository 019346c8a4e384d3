"""Malformed or unsupported ONNX files give one-line OnnxImportErrors naming the node and op."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from onnx_builders import OnnxGraph, mobilenet_like

from qlspec.errors import OnnxImportError
from qlspec.onnx_import import import_onnx


def _conv_model(**conv_attrs):
    b = OnnxGraph()
    y = b.node("Conv", ["x", b.const("w", np.ones((2, 1, 3, 3)))], kernel_shape=[3, 3], **conv_attrs)
    return b.model({"x": (1, 1, 5, 5)}, [y])


def test_truncated_file(write_onnx, tmp_path):
    model, _ = mobilenet_like(np.random.default_rng(0), size=8, width=4, blocks=1)
    data = model.SerializeToString()
    p = tmp_path / "cut.onnx"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(OnnxImportError, match="cut.onnx: .*(not a valid ONNX|no graph)"):
        import_onnx(p)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(OnnxImportError, match="no graph"):
        import_onnx(empty)
    with pytest.raises(OnnxImportError, match="cannot read"):
        import_onnx(tmp_path / "missing.onnx")


def test_unknown_op_names_node_and_supported_set(write_onnx):
    b = OnnxGraph()
    y = b.node("Sigmoid", ["x"])
    with pytest.raises(OnnxImportError) as e:
        import_onnx(write_onnx(b.model({"x": (1, 4)}, [y])))
    msg = str(e.value)
    assert msg.startswith("m.onnx: node Sigmoid_") and "(Sigmoid)" in msg and "unsupported op Sigmoid" in msg
    assert "Conv" in msg and "RequantShift" in msg and "\n" not in msg


def test_wrong_attribute_type(write_onnx):
    with pytest.raises(OnnxImportError, match=r"node Conv_\d+ \(Conv\): attribute 'group' must be INT \(got FLOAT\)"):
        import_onnx(write_onnx(_conv_model(group=1.0)))


def test_unsupported_attribute(write_onnx):
    with pytest.raises(OnnxImportError, match=r"unsupported attribute\(s\) \['foo'\]"):
        import_onnx(write_onnx(_conv_model(foo=3)))


def test_requant_shift_without_n_levels(write_onnx):
    b = OnnxGraph()
    y = b.node("RequantShift", ["x", b.const("m", 3), b.const("a", 0)], div=16, signed=1)
    with pytest.raises(OnnxImportError, match=r"\(RequantShift\): missing attribute 'n_levels'"):
        import_onnx(write_onnx(b.model({"x": (1, 4)}, [y])))


def test_shape_mismatch_between_operands(write_onnx):
    b = OnnxGraph()
    y = b.node("Conv", ["x", b.const("w", np.ones((2, 3, 3, 3)))], kernel_shape=[3, 3])
    with pytest.raises(OnnxImportError, match=r"\(Conv\): input has 1 channels, weight expects 3"):
        import_onnx(write_onnx(b.model({"x": (1, 1, 5, 5)}, [y])))


def test_shape_mismatch_with_the_declared_output(write_onnx):
    b = OnnxGraph()
    y = b.node("Flatten", ["x"], axis=1)
    model = b.model({"x": (1, 2, 3)}, [])
    model.graph.output.append(helper.make_tensor_value_info(y, 1, [1, 7]))
    with pytest.raises(OnnxImportError, match=r"\(Flatten\): shape mismatch: output .* declared \[1, 7\] but computes to \[1, 6\]"):
        import_onnx(write_onnx(model))


def test_non_integer_weights(write_onnx):
    b = OnnxGraph()
    y = b.node("MatMul", ["x", b.const("w", np.full((4, 2), 0.5))])
    with pytest.raises(OnnxImportError, match=r"\(MatMul\): constant 'w_1' holds a non-integer value \(0.5\)"):
        import_onnx(write_onnx(b.model({"x": (1, 4)}, [y])))


def test_stray_mul_is_explained(write_onnx):
    b = OnnxGraph()
    y = b.node("Mul", ["x", b.const("m", 3)])
    with pytest.raises(OnnxImportError, match=r"\(Mul\): Mul is supported only as the start of a requantisation"):
        import_onnx(write_onnx(b.model({"x": (1, 4)}, [y])))
