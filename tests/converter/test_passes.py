"""Each pass: engine before == engine after (np.array_equal), and the op it removes is gone."""

from __future__ import annotations

import numpy as np
import pytest

from qlspec.engine import run_graph
from qlspec.graph.ir import GraphBuilder, Node, TensorInfo
from qlspec.graph.memory_plan import plan_memory
from qlspec.graph.passes import (
    EliminateDeadNodes,
    FoldClipIntoRequant,
    FoldConstants,
    FuseRequantIntoLinear,
    RemoveIdentityRequant,
    optimise,
    run_to_fixed_point,
)

RNG = np.random.default_rng(7)


def _builder(shape=(2, 3, 6, 6), bits=8, signed=True):
    b = GraphBuilder("t")
    b.add_input("x", TensorInfo(shape, bits, signed))
    return b


def _rq(b, x, y, c, div=256, lo=-128, hi=127, mul=None, add=None, name=None):
    m = b.add_constant(f"{y}.mul", np.asarray(mul if mul is not None else RNG.integers(1, 64, (c, 1, 1)), np.int32))
    a = b.add_constant(f"{y}.add", np.asarray(add if add is not None else RNG.integers(-500, 500, (c, 1, 1)), np.int32))
    b.add_node(Node.make("RequantShift", name or f"rq_{y}", [x, m, a], [y], div=div, lo=lo, hi=hi))


def _conv(b, x, y, cin, cout):
    w = b.add_constant(f"{y}.w", RNG.integers(-128, 128, (cout, cin, 3, 3)).astype(np.int8))
    b.add_node(Node.make("Conv", f"conv_{y}", [x, w], [y], pads=(1, 1, 1, 1)))


def _same(g1, g2, x):
    o1, o2 = run_graph(g1, {"x": x}), run_graph(g2, {"x": x})
    assert list(o1) == list(o2)
    for k in o1:
        assert o1[k].dtype == o2[k].dtype and np.array_equal(o1[k], o2[k])


X = RNG.integers(-128, 128, (2, 3, 6, 6))


def test_fuse_requant_into_conv_and_gemm():
    b = _builder()
    _conv(b, "x", "acc", 3, 4)
    _rq(b, "acc", "y", 4)
    b.add_node(Node.make("Flatten", "fl", ["y"], ["f"]))
    w = b.add_constant("fc.w", RNG.integers(-128, 128, (5, 144)).astype(np.int8))
    b.add_node(Node.make("Gemm", "fc", ["f", w], ["z"], trans_b=True))
    _rq(b, "z", "out", 5, mul=RNG.integers(1, 9, 5), add=np.zeros(5))
    g = b.build(["out"])
    g2 = run_to_fixed_point(g, [FuseRequantIntoLinear()])
    assert g2.op_counts() == {"ConvRequant": 1, "Flatten": 1, "GemmRequant": 1}
    assert "acc" not in g2.tensors
    _same(g, g2, X)


def test_no_fusion_when_the_accumulator_is_also_an_output():
    b = _builder()
    _conv(b, "x", "acc", 3, 4)
    _rq(b, "acc", "y", 4)
    g = b.build(["y", "acc"])
    g2, changed = FuseRequantIntoLinear().apply(g)
    assert not changed and g2 is g


def test_remove_identity_requant():
    b = _builder()
    _rq(b, "x", "id", 3, div=16384, mul=np.full((3, 1, 1), 16384), add=np.zeros((3, 1, 1)))  # mul == div, add == 0
    _rq(b, "id", "y", 3)
    _rq(b, "x", "half", 3, div=65536, mul=np.full((), 32768), add=np.zeros(()))  # x -> floor((x+1)/2): kept
    g = b.build(["y", "half"])
    g2 = run_to_fixed_point(g, [RemoveIdentityRequant()])
    assert g2.op_counts() == {"RequantShift": 2} and "id" not in g2.tensors
    _same(g, g2, X)


def test_identity_requant_kept_when_it_would_clip():
    b = _builder(bits=16)  # int16 input: the int8 clip of the "identity" requantiser matters
    _rq(b, "x", "y", 3, div=4, mul=np.full((), 4), add=np.zeros(()))
    g = b.build(["y"])
    assert RemoveIdentityRequant().apply(g)[1] is False


def test_identity_requant_on_the_output_renames_its_producer():
    b = _builder()
    _conv(b, "x", "acc", 3, 4)
    _rq(b, "acc", "y", 4)
    _rq(b, "y", "out", 4, div=8, mul=np.full((), 8), add=np.full((), 3))  # 3 + 4 < 8: still the identity
    g = b.build(["out"])
    g2 = run_to_fixed_point(g, [RemoveIdentityRequant()])
    assert g2.outputs == ("out",) and g2.op_counts() == {"Conv": 1, "RequantShift": 1}
    _same(g, g2, X)


def test_fold_clip_into_requant_and_drop_useless_clips():
    b = _builder()
    _conv(b, "x", "acc", 3, 4)
    _rq(b, "acc", "r", 4, lo=-(2**20), hi=2**20)
    b.add_node(Node.make("Clip", "relu6", ["r"], ["y"], lo=0, hi=6))
    b.add_node(Node.make("Clip", "noop", ["y"], ["out"], lo=-5, hi=100))
    g = b.build(["out"])
    g2 = run_to_fixed_point(g, [FoldClipIntoRequant()])
    assert "Clip" not in g2.op_counts()
    (rq,) = [n for n in g2.nodes if n.op == "RequantShift"]
    assert (rq.attr("lo"), rq.attr("hi")) == (0, 6) and g2.info("out").bits == 3
    _same(g, g2, X)


def test_fold_constants_evaluates_constant_subgraphs():
    b = _builder(shape=(2, 8), bits=8)
    wt = b.add_constant("w_t", RNG.integers(-128, 128, (8, 5)).astype(np.int8))
    b.add_node(Node.make("Transpose", "tr", [wt], ["w"], perm=(1, 0)))
    b.add_node(Node.make("Gemm", "fc", ["x", "w"], ["y"], trans_b=True))
    g = b.build(["y"])
    g2 = run_to_fixed_point(g, [FoldConstants(), EliminateDeadNodes()])
    assert g2.op_counts() == {"Gemm": 1} and "w_t" not in g2.constants and g2.constants["w"].dtype == np.int8
    x = RNG.integers(-128, 128, (2, 8))
    assert np.array_equal(run_graph(g, {"x": x})["y"], run_graph(g2, {"x": x})["y"])


def test_eliminate_dead_nodes():
    b = _builder()
    _conv(b, "x", "acc", 3, 4)
    _rq(b, "acc", "y", 4)
    _conv(b, "x", "unused", 3, 2)
    g = b.build(["y"])
    g2 = run_to_fixed_point(g, [EliminateDeadNodes()])
    assert g2.op_counts() == {"Conv": 1, "RequantShift": 1} and "unused.w" not in g2.constants
    _same(g, g2, X)


def test_passes_are_pure():
    b = _builder()
    _conv(b, "x", "acc", 3, 4)
    _rq(b, "acc", "y", 4)
    g = b.build(["y"])
    before = (g.nodes, dict(g.tensors))
    optimise(g)
    assert (g.nodes, dict(g.tensors)) == before


def _chain(n_layers):
    b = _builder()
    x = "x"
    for i in range(n_layers):
        _conv(b, x, f"a{i}", 3, 3)
        _rq(b, f"a{i}", f"r{i}", 3)
        x = f"r{i}"
    return b.build([x])


def test_memory_plan_reuses_buffers_without_overlap():
    g = optimise(_chain(6))
    plan = plan_memory(g)
    plan.check()
    assert plan.arena_bytes < plan.naive_bytes
    assert plan.peak_live_bytes <= plan.arena_bytes
    one = g.info("r0").nbytes
    assert plan.arena_bytes == 2 * one  # a chain ping-pongs between two buffers


@pytest.mark.parametrize("n", [1, 3])
def test_optimise_is_exact_on_chains(n):
    g = _chain(n)
    _same(g, optimise(g), X)
