"""Mutated ONNX files: the importer gives a graph or one located `OnnxImportError`, never a traceback,
and never reads a file the model names outside its own folder.

Each example starts from a real export of a toy network (both flavours) and applies a handful of
generated mutations at the protobuf level: initializer dims, element types, truncated data,
external-data locations (absolute, ``..``, missing, a secret beside the current directory),
attribute types and duplicates, op types, dropped inputs and outputs, and truncated bytes.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
from export_toys import SIZE, fake_quantised
from fuzzing import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import AttributeProto, TensorProto, helper

from qlspec.errors import QlspecError
from qlspec.export import fake_to_true, to_onnx
from qlspec.export.files import Flavour
from qlspec.onnx_import import import_onnx

pytestmark = pytest.mark.usefixtures("one_thread")
SECRET = b"top-secret-bytes-0123456789abcdef"
_MODELS: dict[str, onnx.ModelProto] = {}


def model(flavour: Flavour) -> onnx.ModelProto:
    if flavour not in _MODELS:
        net = fake_to_true(fake_quantised("ptq", 8, "per-channel", "global"), input_shape=(1, 3, SIZE, SIZE))
        _MODELS[flavour] = to_onnx(net, flavour)
    return _MODELS[flavour]


def mutate(m: onnx.ModelProto, op: tuple, draw_int) -> None:
    kind, a, b = op
    g = m.graph
    if kind == "dims" and g.initializer:
        t = g.initializer[a % len(g.initializer)]
        del t.dims[:]
        t.dims.extend([b % 7 - 1, (a * 3) % 5])
    elif kind == "dtype" and g.initializer:
        g.initializer[a % len(g.initializer)].data_type = b % 40
    elif kind == "truncate_data" and g.initializer:
        t = g.initializer[a % len(g.initializer)]
        if t.raw_data:
            t.raw_data = t.raw_data[: b % max(len(t.raw_data), 1)]
        else:
            del t.float_data[b % max(len(t.float_data), 1) :]
    elif kind == "external" and g.initializer:
        t = g.initializer[a % len(g.initializer)]
        location = ["secret.txt", "/etc/hostname", "../secret.txt", "missing.bin", "", "sub/../secret.txt", "weights.bin"][b % 7]
        t.ClearField("raw_data")
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        del t.external_data[:]
        t.external_data.add(key="location", value=location)
        if b % 3 == 0:
            t.external_data.add(key="length", value=str(b))
    elif kind == "attr_type" and g.node:
        n = g.node[a % len(g.node)]
        if n.attribute:
            at = n.attribute[b % len(n.attribute)]
            at.type = [
                AttributeProto.INT,
                AttributeProto.FLOAT,
                AttributeProto.STRING,
                AttributeProto.TENSOR,
                AttributeProto.INTS,
                AttributeProto.GRAPHS,
            ][b % 6]
    elif kind == "attr_dup" and g.node:
        n = g.node[a % len(g.node)]
        if n.attribute:
            n.attribute.append(copy.deepcopy(n.attribute[b % len(n.attribute)]))
    elif kind == "op_type" and g.node:
        g.node[a % len(g.node)].op_type = ["Conv", "Gemm", "Add", "Mul", "Div", "Floor", "Clip", "RequantShift", "Relu", "Bogus"][b % 10]
    elif kind == "drop_input" and g.node:
        n = g.node[a % len(g.node)]
        if n.input:
            del n.input[b % len(n.input)]
    elif kind == "rename_input" and g.node:
        n = g.node[a % len(g.node)]
        if n.input:
            n.input[b % len(n.input)] = f"nowhere_{b}"
    elif kind == "drop_outputs":
        del g.output[:]
    elif kind == "drop_node" and g.node:
        del g.node[a % len(g.node)]
    elif kind == "bad_tensor_attr" and g.node:
        n = g.node[a % len(g.node)]
        n.attribute.append(helper.make_attribute("div", helper.make_tensor("div", TensorProto.FLOAT, [b % 4 + 2], [1.0] * (b % 4 + 2))))


OPS = st.tuples(
    st.sampled_from(
        [
            "dims",
            "dtype",
            "truncate_data",
            "external",
            "attr_type",
            "attr_dup",
            "op_type",
            "drop_input",
            "rename_input",
            "drop_outputs",
            "drop_node",
            "bad_tensor_attr",
        ]
    ),
    st.integers(0, 1000),
    st.integers(0, 1000),
)


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(flavour=st.sampled_from(["deeploy", "dory"]), ops=st.lists(OPS, min_size=1, max_size=3), cut=st.none() | st.integers(0, 5000))
def test_mutated_files_import_or_fail_with_a_located_error(tmp_path, monkeypatch, flavour, ops, cut):
    (tmp_path / "secret.txt").write_bytes(SECRET)
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "weights.bin").write_bytes(np.arange(64, dtype=np.float32).tobytes())
    monkeypatch.chdir(tmp_path)  # a relative external location would be read from here by a careless loader
    m = copy.deepcopy(model(flavour))
    for op in ops:
        mutate(m, op, None)
    data = m.SerializeToString()
    path = folder / "network.onnx"
    path.write_bytes(data[:cut] if cut is not None else data)
    try:
        g = import_onnx(path, input_types={"input": (8, True)})
    except QlspecError as e:
        assert str(e) and "network.onnx" in str(e), str(e)
        return
    secret = np.frombuffer(SECRET[: len(SECRET) // 4 * 4], np.float32)
    for v in g.constants.values():
        assert not (v.size >= 4 and np.isin(secret, v.astype(np.float32)).all()), "secret bytes reached a constant"


def test_external_data_outside_the_model_folder_is_refused(tmp_path, monkeypatch):
    (tmp_path / "secret.txt").write_bytes(SECRET)
    monkeypatch.chdir(tmp_path)
    for location in ("secret.txt", "../secret.txt", str(tmp_path / "secret.txt")):
        m = copy.deepcopy(model("deeploy"))
        t = m.graph.initializer[0]
        t.ClearField("raw_data")
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        t.external_data.add(key="location", value=location)
        (tmp_path / "m").mkdir(exist_ok=True)
        (tmp_path / "m" / "network.onnx").write_bytes(m.SerializeToString())
        with pytest.raises(QlspecError, match="external data"):
            import_onnx(tmp_path / "m" / "network.onnx")


def test_duplicated_attribute_and_missing_outputs_are_errors(tmp_path):
    m = copy.deepcopy(model("dory"))
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    conv.attribute.append(copy.deepcopy(conv.attribute[0]))
    (tmp_path / "a.onnx").write_bytes(m.SerializeToString())
    with pytest.raises(QlspecError, match="more than once"):
        import_onnx(tmp_path / "a.onnx")
    m = copy.deepcopy(model("dory"))
    del m.graph.output[:]
    (tmp_path / "b.onnx").write_bytes(m.SerializeToString())
    with pytest.raises(QlspecError, match="no outputs"):
        import_onnx(tmp_path / "b.onnx")
