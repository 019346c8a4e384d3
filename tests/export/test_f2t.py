"""F2T: the integer graph it emits, and its exactness against the fake-quantised net, layer by layer and end to end."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from export_toys import (
    ALL_TOPOLOGY_CASES,
    CASES,
    SIZE,
    fake_quantised,
    images,
    layerwise_diffs,
    output_gap_and_bound,
    unexplained_flips,
)

from qlspec.export import ExportError, fake_to_true, histogram
from qlspec.export.requant import fit_float32
from qlspec.quant import QuantConfig, float_to_fake
from qlspec.spec.models import Export

D = Export().requant_bits  # the spec's default

pytestmark = pytest.mark.usefixtures("one_thread")


_CACHE: dict = {}


def integerised(mode, bits, gran, pool, topology="chain"):
    key = (mode, bits, gran, pool, topology)
    if key not in _CACHE:
        fq = fake_quantised(mode, bits, gran, pool, topology=topology)
        _CACHE[key] = (fq, fake_to_true(fq, requant_bits=D, input_shape=(1, 3, SIZE, SIZE)))
    return _CACHE[key]


ALL_CASES = ALL_TOPOLOGY_CASES


@pytest.mark.parametrize("mode,bits,gran,pool,topology", ALL_CASES)
def test_each_requantiser_is_within_one_lsb_of_fq_given_the_same_input(mode, bits, gran, pool, topology):
    fq, net = integerised(mode, bits, gran, pool, topology)
    x, _ = images(64, 11)
    diffs = layerwise_diffs(fq, net, x)
    for source, d in diffs.items():
        assert int(np.abs(d).max()) <= 1, f"{source}: {histogram(d)}"


@pytest.mark.parametrize("mode,bits,gran,pool,topology", ALL_CASES)
def test_every_requantiser_flip_is_float32_rounding(mode, bits, gran, pool, topology):
    """How many values flip depends on the CPU; that each flip sits within float32's derived error
    band of a level does not (see `unexplained_flips`)."""
    fq, net = integerised(mode, bits, gran, pool, topology)
    x, _ = images(64, 11)
    for source, (flips, unexplained) in unexplained_flips(fq, net, x).items():
        assert unexplained == 0, f"{source}: {unexplained} of {flips} flips are not float32 rounding"


def test_flip_check_catches_an_add_off_by_a_quarter_lsb():
    fq, net = integerised("ptq", 8, "per-channel", "global")
    rq = next(n for n in net.graph.nodes if n.op == "RequantShift")
    broken = with_constant(net, rq.inputs[2], net.graph.constants[rq.inputs[2]] + rq.attr("div") // 4)
    flips = unexplained_flips(fq, broken, images(16, 11)[0])
    assert flips[net.sources[rq.name]][1] > 0


@pytest.mark.parametrize("mode,bits,gran,pool", CASES)
def test_tq_output_is_within_the_derived_bound_of_fq(mode, bits, gran, pool):
    """TQ's output departs from FQ's only by what upstream flips and float32 rounding can explain.

    A fraction of agreeing outputs is no invariant: which requantiser input lands a hair from a level
    depends on float rounding, hence on the CPU. The bound of `output_gap_and_bound` is derived, so it
    holds everywhere; where no Gemm input flipped it is half an LSB plus float32's worst case."""
    fq, net = integerised(mode, bits, gran, pool)
    x, _ = images(64, 12)
    gap, bound, _ = output_gap_and_bound(fq, net, x)
    assert np.all(np.abs(gap) <= bound), histogram(gap - np.clip(gap, -bound, bound))


def test_output_bound_catches_a_wrong_bias():
    fq, net = integerised("ptq", 8, "per-channel", "global")
    bias = net.graph.producer("output").inputs[2]
    broken = with_constant(net, bias, net.graph.constants[bias] + 3)
    gap, bound, _ = output_gap_and_bound(fq, broken, images(8, 12)[0])
    assert np.any(np.abs(gap) > bound)


def with_constant(net, name, value):
    """`net` with one constant of its graph replaced (to check that a test can fail)."""
    g = net.graph.rewrite(constants={name: value.astype(net.graph.constants[name].dtype)})
    return dataclasses.replace(net, graph=g)


def test_input_quantiser_is_a_graph_node_mapping_pixels_to_pixel_minus_128():
    _, net = integerised("ptq", 8, "per-channel", "global")
    x, pixels = images(8, 13)
    q = net.graph.nodes[0]
    assert q.op == "Quantise" and q.inputs == ("image",) and q.outputs == ("input",)
    assert q.attr_dict == {"eps": 1 / 128, "lo": -128, "hi": 127, "rounding": "floor"}
    assert net.input_eps == 1 / 128 and net.graph.info("image").is_float
    assert np.array_equal(net.quantise_input(x), pixels.long().numpy() - 128)


def test_graph_structure_and_eps():
    fq, net = integerised("qat", 8, "per-channel", "global")
    g = net.graph
    ops = [n.op for n in g.nodes]
    assert ops == ["Quantise"] + ["Conv", "RequantShift"] * 5 + ["GlobalSumPool", "RequantShift", "Flatten", "Gemm"]
    conv1 = g.nodes[1]
    assert net.eps[conv1.outputs[0]].shape == (4,)  # per channel: eps_w * eps_in
    np.testing.assert_allclose(net.eps[conv1.outputs[0]], fq.conv1.get_eps_w().double().numpy().ravel() / 128)
    assert len(conv1.inputs) == 2  # the bias is folded into the requantiser
    rq = g.nodes[2]
    assert g.constants[rq.inputs[1]].shape == (4, 1, 1) and rq.attr("div") == 2 ** net.fits[0].shift
    assert (rq.attr("lo"), rq.attr("hi")) == (0, 255) and g.info(rq.outputs[0]).describe() == "u8[1x4x8x8]"
    pool = g.nodes[-4]
    pool_rq = g.nodes[-3]
    assert pool_rq.inputs[0] == pool.outputs[0] and g.constants[pool_rq.inputs[1]].shape == ()
    np.testing.assert_allclose(net.eps[pool.outputs[0]], net.eps[pool.inputs[0]] / 16)  # the sum's eps
    fc = g.nodes[-1]
    assert fc.outputs == ("output",) and fc.attr("trans_b") and np.any(g.constants[fc.inputs[2]] != 0)
    assert net.output_eps.shape == (5,) and net.sources[fc.name] == "fc"
    assert sum(g.constants[t].nbytes for t in g.constants if t.endswith(".weight")) == sum(
        g.constants[t].size for t in g.constants if t.endswith(".weight")
    )  # 8-bit weights are stored as int8


def test_tq_is_the_graph_run_by_the_reference_engine():
    _, net = integerised("qat", 8, "per-channel", "window")
    x, _ = images(8, 14)
    from qlspec.engine import run_graph

    want = run_graph(net.integer_graph(), {"input": net.quantise_input(x)})["output"]
    assert np.array_equal(net.run(x, batch=3), want)


def test_per_layer_weights_give_scalar_eps():
    _, net = integerised("ptq", 8, "per-layer", "global")
    assert net.eps[net.graph.nodes[1].outputs[0]].shape == ()


def test_unstarted_quantiser_is_an_export_error():
    from export_toys import Mini

    x, _ = images(4, 1)
    fq = float_to_fake(Mini().eval(), QuantConfig(), x)
    with pytest.raises(ExportError, match="not started"):
        fake_to_true(fq, input_shape=(1, 3, SIZE, SIZE))


def test_fit_float32_keeps_small_values_and_rounds_large_ones():
    v = np.array([5, -(2**23), 2**24 - 1, 2**30 + 77, -(2**31) - 5], np.int64)
    out = fit_float32(v)
    assert np.array_equal(out[:3], v[:3])
    for w in (out, out - 0):
        assert np.array_equal(w.astype(np.float32).astype(np.int64), w)
    assert np.all(np.abs(out - v) <= np.abs(v) * 2.0**-23)
    half = 2**23
    out = fit_float32(np.array([2**24 + 3, -(2**25) - 7]), half=half)
    assert np.array_equal((out - half).astype(np.float32).astype(np.int64), out - half)


def test_residual_add_is_harmonised_into_requantised_branches_and_an_integer_add():
    fq, net = integerised("qat", 8, "per-channel", "global", "residual")
    g = net.graph
    add = next(n for n in g.nodes if n.op == "Add")
    branches = [g.producer(t) for t in add.inputs]
    assert [b.op for b in branches] == ["RequantShift", "RequantShift"]
    assert [net.sources[b.name] for b in branches] == [f"{net.sources[add.name]}.act_in[{i}]" for i in range(2)]
    assert [(b.attr("lo"), b.attr("hi")) for b in branches] == [(-128, 127)] * 2  # one shared signed grid
    assert g.info(add.outputs[0]).describe() == "i9[1x8x4x4]"  # the exact sum never saturates
    relu = g.consumers(add.outputs[0])[0]
    assert relu.op == "RequantShift" and (relu.attr("lo"), relu.attr("hi")) == (0, 255)
    np.testing.assert_allclose(net.eps[add.outputs[0]], float(fq.get_submodule(net.sources[add.name]).act_in.get_eps()))
    # 3DDFA_V2's ResNet ends in a 1x1 conv with bias, then the global pool: sum of accumulators, requantised
    pool = g.producer(g.producer("output").inputs[0]) if g.producer("output").op == "Flatten" else None
    assert pool is not None and pool.op == "RequantShift" and g.producer(pool.inputs[0]).op == "GlobalSumPool"


def test_concatenation_is_harmonised_into_requantised_inputs_and_an_integer_concat():
    fq, net = integerised("ptq", 8, "per-layer", "global", "concat")
    g = net.graph
    cat = next(n for n in g.nodes if n.op == "Concat")
    assert cat.attr("axis") == 1 and [g.producer(t).op for t in cat.inputs] == ["RequantShift", "RequantShift"]
    assert {net.sources[g.producer(t).name] for t in cat.inputs} == {f"{net.sources[cat.name]}.act_in[{i}]" for i in range(2)}
    assert g.info(cat.outputs[0]).describe() == "i8[1x12x8x8]"
    x, _ = images(8, 5)
    with torch.no_grad():
        y = fq(x).double().numpy()
    assert np.abs(net.run(x) * net.output_eps - y).max() < 0.05 * np.abs(y).max()
