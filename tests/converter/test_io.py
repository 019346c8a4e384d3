"""Serialisation: exact round trip, version checks, corrupt folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fuzzing import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qlspec.engine import run_graph
from qlspec.errors import GraphError
from qlspec.graph.io import load_graph, save_graph
from qlspec.graph.ir import GraphBuilder, Node, TensorInfo
from qlspec.graph.passes import optimise


def _graph():
    rng = np.random.default_rng(0)
    b = GraphBuilder("g")
    b.add_input("in:0/x", TensorInfo((1, 2, 5, 5), 8, False))  # names with odd characters
    b.add_constant("w.weight", rng.integers(-128, 128, (3, 2, 3, 3)).astype(np.int8))
    b.add_constant("w.bias", rng.integers(-99, 99, 3).astype(np.int32))
    b.add_constant("m", np.array([5, 6, 7], np.int32).reshape(3, 1, 1))
    b.add_constant("a", np.array([-1, 0, 1 << 40], np.int64).reshape(3, 1, 1))
    b.add_node(Node.make("Conv", "c", ["in:0/x", "w.weight", "w.bias"], ["acc"], pads=(1, 0, 1, 0), strides=(2, 1)))
    b.add_node(Node.make("RequantShift", "r", ["acc", "m", "a"], ["y"], div=1 << 20, lo=0, hi=15))
    b.add_node(Node.make("MaxPool", "p", ["y"], ["z"], kernel_shape=(2, 2), ceil_mode=True))
    return b.build(["z", "y"])


@pytest.mark.parametrize("optimised", [False, True])
def test_round_trip_is_exact(tmp_path, optimised):
    g = optimise(_graph()) if optimised else _graph()
    g2 = load_graph(save_graph(g, tmp_path / "out"))
    assert g2 == g
    assert g2.constants["a"].dtype == np.int64 and g2.nodes == g.nodes
    x = np.random.default_rng(1).integers(0, 256, (1, 2, 5, 5))
    for k, v in run_graph(g, {"in:0/x": x}).items():
        assert np.array_equal(v, run_graph(g2, {"in:0/x": x})[k])


def test_graph_json_is_versioned_and_readable(tmp_path):
    save_graph(_graph(), tmp_path)
    doc = json.loads((tmp_path / "graph.json").read_text())
    assert doc["format"] == "qlspec-graph" and doc["format_version"] == 1 and doc["ir_version"] == 1
    assert doc["nodes"][0]["attrs"]["pads"] == [1, 0, 1, 0]


def test_newer_format_is_refused(tmp_path):
    save_graph(_graph(), tmp_path)
    doc = json.loads((tmp_path / "graph.json").read_text())
    doc["format_version"] = 99
    (tmp_path / "graph.json").write_text(json.dumps(doc))
    with pytest.raises(GraphError, match="newer"):
        load_graph(tmp_path)


def test_corrupt_or_missing_files(tmp_path):
    with pytest.raises(GraphError, match="not a qlspec graph folder"):
        load_graph(tmp_path)
    save_graph(_graph(), tmp_path)
    (tmp_path / "constants.npz").write_bytes(b"garbage")
    with pytest.raises(GraphError, match="corrupt"):
        load_graph(tmp_path)
    save_graph(_graph(), tmp_path)
    (tmp_path / "graph.json").write_text("{")
    with pytest.raises(GraphError, match="unreadable"):
        load_graph(tmp_path)


def test_tampered_types_are_detected(tmp_path):
    save_graph(_graph(), tmp_path)
    doc = json.loads((tmp_path / "graph.json").read_text())
    doc["tensors"]["y"]["bits"] = 8
    (tmp_path / "graph.json").write_text(json.dumps(doc))
    with pytest.raises(GraphError, match="disagree"):
        load_graph(tmp_path)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def _paths(doc, prefix=()):
    """Every (path) into a JSON document, containers and leaves."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(picks=st.lists(st.tuples(st.integers(0, 10_000), JSON_VALUES), min_size=1, max_size=3))
def test_graph_json_with_any_values_in_any_place_is_a_graph_or_a_graph_error(tmp_path, picks):
    folder = save_graph(_graph(), tmp_path / "g")
    doc = json.loads((folder / "graph.json").read_text())
    for index, value in picks:
        paths = [p for p in _paths(doc) if p]
        *parent, last = paths[index % len(paths)]
        node = doc
        for part in parent:
            node = node[part]
        node[last] = value
    (folder / "graph.json").write_text(json.dumps(doc))
    try:
        load_graph(folder)
    except GraphError as e:
        assert str(e)
