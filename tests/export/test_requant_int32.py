"""Requantisers for int32 kernels: the constants' rule, D fitted with headroom, the int32 cross-check,
the torch executor (rung FQI) against the reference engine, and one rounding rule in FQ and TQ."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
from export_toys import ALL_TOPOLOGY_CASES, SIZE, fake_quantised, float32_magnitude, images
from hypothesis import given, settings
from hypothesis import strategies as st

from qlspec.engine.ops.requant_shift import RequantShift
from qlspec.engine.torch_run import run_graph_torch
from qlspec.errors import GraphError
from qlspec.export import fake_to_true, run_onnxruntime, to_onnx
from qlspec.export.f2t import IMAGE, OUTPUT
from qlspec.export.int32_check import cross_check, deeploy_requant
from qlspec.export.requant import choose_shift, constants, peak, table_markdown
from qlspec.graph.ir import Node, TensorInfo, make_graph
from qlspec.quant.pact import PACTSignedAct, PACTUnsignedAct

pytestmark = pytest.mark.usefixtures("one_thread")
SHAPE = (1, 3, SIZE, SIZE)


def requantise(a: int, mul: int, add: int, shift: int) -> int:
    """The IR's RequantShift without clip, in Python integers."""
    return (a * mul + add + (1 << shift >> 1)) >> shift


@settings(max_examples=300, deadline=None)
@given(
    ratio=st.floats(1e-4, 4.0), bias=st.floats(-300, 300), a=st.integers(-(2**20), 2**20), shift=st.integers(8, 31), rounding=st.booleans()
)
def test_constants_apply_the_rule_within_their_representation_error(ratio, bias, a, shift, rounding):
    """q = floor(ratio*a + bias) (or half up): exact up to the derived bound on the constants' rounding,
    ``(|a|/2 + 1/2) / 2**D`` plus float32's storage rounding (2**-24 of each constant)."""
    mul, add = (int(v) for v in constants(np.asarray(ratio), np.asarray(bias), shift, rounding=rounding))
    real = ratio * a + bias + (0.5 if rounding else 0.0)
    band = (abs(a) / 2 + 0.5 + 2.0**-24 * (abs(a * mul) + abs(add) + 2**shift)) / 2**shift + 1e-9 * abs(real)
    q = requantise(a, mul, add, shift)
    if abs(real - round(real)) > band:  # away from a level: the rule decides alone
        assert q == math.floor(real)
    else:
        assert math.floor(real - band) <= q <= math.floor(real + band)


@settings(max_examples=200, deadline=None)
@given(
    ratio=st.lists(st.floats(1e-3, 2.0), min_size=1, max_size=4),
    bias=st.floats(-500, 500),
    lo=st.integers(-(2**22), 0),
    span=st.integers(0, 2**23),
    headroom=st.sampled_from([1.0, 2.0, 4.0]),
    rounding=st.booleans(),
)
def test_chosen_shift_is_the_largest_within_headroom(ratio, bias, lo, span, headroom, rounding):
    r, b = np.asarray(ratio).reshape(-1, 1, 1), np.full((len(ratio), 1, 1), bias)
    a_lo, a_hi = np.asarray(lo), np.asarray(lo + span)
    d = choose_shift(r, b, a_lo, a_hi, rounding=rounding, headroom=headroom)
    mul, add = constants(r, b, d, rounding=rounding)
    assert peak(mul, add, d, a_lo, a_hi) <= 2**31 / headroom
    if d < 31:
        mul, add = constants(r, b, d + 1, rounding=rounding)
        assert peak(mul, add, d + 1, a_lo, a_hi) > 2**31 / headroom


@settings(max_examples=200, deadline=None)
@given(
    mul=st.integers(-(2**20), 2**20),
    add=st.integers(-(2**30), 2**30),
    lo=st.integers(-1000, 1000),
    span=st.integers(0, 50),
    shift=st.integers(1, 31),
)
def test_peak_is_the_largest_magnitude_over_the_range(mul, add, lo, span, shift):
    half = 1 << (shift - 1)
    brute = max(max(abs(a * mul + add), abs(a * mul + add + half)) for a in range(lo, lo + span + 1))
    assert peak(np.asarray(mul), np.asarray(add), shift, np.asarray(lo), np.asarray(lo + span)) == brute


@settings(max_examples=300, deadline=None)
@given(
    x=st.lists(st.integers(-(2**15), 2**15), min_size=1, max_size=20),
    mul=st.integers(-(2**14), 2**14),
    add=st.integers(-(2**28), 2**28),
    shift=st.integers(1, 31),
)
def test_deeploy_kernel_equals_the_op_exactly_when_nothing_overflows(x, mul, add, shift):
    """|x*mul| <= 2**29 and |add| <= 2**28: with the half (<= 2**30) every sum stays inside int32."""
    xs = np.asarray(x, np.int64)
    ref = RequantShift(div=2**shift, lo=-128, hi=127).run(xs, np.asarray(mul), np.asarray(add))
    got = deeploy_requant(xs, np.asarray(mul), np.asarray(add), shift, -128, 127)
    t = xs * mul + add
    assert np.all(np.abs(t) + 2 ** (shift - 1) < 2**31)
    np.testing.assert_array_equal(got, ref)


def test_deeploy_kernel_wraps_where_int32_overflows():
    x = np.asarray([2**20], np.int64)
    assert RequantShift(div=2**10, lo=-128, hi=127).run(x, np.asarray(2**12), np.asarray(0))[0] == 127
    assert deeploy_requant(x, np.asarray(2**12), np.asarray(0), 10, -128, 127)[0] == 0  # 2**32 wraps to 0


@pytest.mark.parametrize("mode,bits,gran,pool,topology", ALL_TOPOLOGY_CASES)
def test_fitted_requantisers_fit_int32_with_headroom_on_the_data(mode, bits, gran, pool, topology):
    fq = fake_quantised(mode, bits, gran, pool, topology=topology)
    x, _ = images(48, 5)
    net = fake_to_true(fq, input_shape=SHAPE, samples=x)
    out, report = cross_check(net.graph, {IMAGE: x.numpy()}, OUTPUT)
    assert report.mismatches == 0 and report.values > 0
    assert report.min_headroom >= 2.0 * (1 - 1e-6)  # the FQ estimate of each accumulator is within float32 noise
    for fit in net.fits:
        assert fit.observed_headroom >= 2.0 and fit.worst_peak >= fit.observed_peak
        assert 2**31 / report.peaks[fit.name] >= 2.0 * (1 - 1e-6)
    np.testing.assert_array_equal(out, net.run(x))


def test_a_fixed_large_d_overflows_and_the_cross_check_says_so():
    fq = fake_quantised("ptq", 8, "per-channel", "global")
    x, _ = images(16, 5)
    net = fake_to_true(fq, input_shape=SHAPE, requant_bits=31, samples=x)
    _, report = cross_check(net.graph, {IMAGE: x.numpy()}, OUTPUT)
    assert report.mismatches > 0 and report.min_headroom < 1
    assert any(f.observed_headroom < 1 for f in net.fits)
    # per requantiser: the counts add up, and exactly the overflowing ones disagree
    assert sum(v for v, _ in report.agreement.values()) == report.values
    assert sum(m for _, m in report.agreement.values()) == report.mismatches
    for fit in net.fits:
        values, bad = report.agreement[fit.name]
        assert values > 0 and (bad > 0) <= (2**31 / report.peaks[fit.name] < 1)
    table = table_markdown(list(net.fits), report.agreement)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines()[2:]}
    assert set(rows) == {f.name for f in net.fits}
    for name, (values, bad) in report.agreement.items():
        assert rows[name].endswith(f" | {bad:,} of {values:,} |")


def test_deeploy_file_stores_fitted_requantisers_as_int32():
    net = fake_to_true(fake_quantised("qat", 8, "per-channel", "window"), input_shape=SHAPE, samples=images(32, 5)[0])
    m = to_onnx(net, "deeploy")
    inits = {i.name: i for i in m.graph.initializer}
    rqs = [n for n in m.graph.node if n.op_type == "RequantShift"]
    assert rqs and all(inits[t].data_type == onnx.TensorProto.INT32 for n in rqs for t in n.input[1:])


def test_onnxruntime_is_exact_only_where_float32_holds_every_value():
    """DORY's chain computes x*mul + add in float32: exact below 2**24 (D = 10 on the toys), not
    guaranteed with int32-fitted constants (x*mul reaches 2**28 and more), which is why the report
    counts onnxruntime's mismatches rather than claiming none."""
    fq = fake_quantised("ptq", 8, "per-channel", "global")
    x, _ = images(32, 5)
    small = fake_to_true(fq, input_shape=SHAPE, requant_bits=10)
    q = small.quantise_input(x)
    assert float32_magnitude(small, q) < 2**24
    assert (np.rint(run_onnxruntime(to_onnx(small, "dory"), q)).astype(np.int64) != small.run(x)).sum() == 0
    fitted = fake_to_true(fq, input_shape=SHAPE, samples=x)
    assert float32_magnitude(fitted, q) > 2**28


# -- rung FQI: the torch executor against the reference engine -----------------------------------


@pytest.mark.parametrize("mode,bits,gran,pool,topology", ALL_TOPOLOGY_CASES)
def test_torch_executor_equals_the_reference_engine(mode, bits, gran, pool, topology):
    fq = fake_quantised(mode, bits, gran, pool, topology=topology)
    x, _ = images(48, 9)
    for net in (fake_to_true(fq, input_shape=SHAPE, samples=x), fake_to_true(fq, input_shape=SHAPE, requant_bits=30)):
        np.testing.assert_array_equal(net.run(x, engine="torch"), net.run(x))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.1, 40.0))
def test_torch_executor_equals_the_reference_on_any_input(seed, scale):
    """Inputs far outside the training range (so every clip and every accumulator extreme is hit)."""
    net = _NETS.setdefault(
        "net",
        fake_to_true(fake_quantised("qat", 8, "per-channel", "window", topology="residual"), input_shape=SHAPE, samples=images(16, 5)[0]),
    )
    x = torch.randn(8, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) * scale
    np.testing.assert_array_equal(net.run(x, engine="torch"), net.run(x))


_NETS: dict = {}


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    x_bits=st.sampled_from([8, 16, 24, 32]),
    mul_bits=st.integers(1, 24),
    add_bits=st.integers(0, 40),
    shift=st.integers(0, 31),
    per_channel=st.booleans(),
    out=st.sampled_from([(0, 255), (-128, 127), (-(2**15), 2**15 - 1)]),
)
def test_torch_executor_requantises_as_the_docstring_on_every_path(data, x_bits, mul_bits, add_bits, shift, per_channel, out):
    """One RequantShift through the torch executor against Python integers: sizes that fit int32, only
    float64, and only int64 (each path of its arithmetic), signed multipliers and offsets."""
    c = 3
    x_lo, x_hi = -(2 ** (x_bits - 1)), 2 ** (x_bits - 1) - 1
    x = np.array(data.draw(st.lists(st.integers(x_lo, x_hi), min_size=c * 4, max_size=c * 4), label="x")).reshape(1, c, 2, 2)
    k = c if per_channel else 1
    mul = np.array(data.draw(st.lists(st.integers(-(2**mul_bits), 2**mul_bits), min_size=k, max_size=k), label="mul"))
    add = np.array(data.draw(st.lists(st.integers(-(2**add_bits), 2**add_bits), min_size=k, max_size=k), label="add"))
    mul, add = (v.reshape(1, k, 1, 1) for v in (mul, add))
    lo, hi = out
    div = 2**shift
    g = make_graph(
        "rq",
        {"x": TensorInfo((1, c, 2, 2), x_bits, True)},
        [Node.make("RequantShift", "rq", ["x", "mul", "add"], ["y"], div=div, lo=lo, hi=hi)],
        {"mul": mul, "add": add},
        ["y"],
    )
    got = run_graph_torch(g, {"x": x})["y"]
    want = [min(max((int(a) * int(m) + int(d) + div // 2) // div, lo), hi) for a, m, d in np.nditer([x, mul, add], order="C")]
    assert got.reshape(-1).tolist() == want


def test_torch_executor_refuses_ops_it_does_not_implement():
    g = make_graph("t", {"x": TensorInfo((1, 4), 8, True)}, [Node.make("Clip", "c", ["x"], ["y"], lo=0, hi=3)], {}, ["y"])
    with pytest.raises(GraphError, match="not implemented by the torch executor"):
        run_graph_torch(g, {"x": np.zeros((1, 4), np.int64)})


# -- one rounding rule ---------------------------------------------------------------------------


def test_input_quantiser_floors_the_same_in_fq_and_tq():
    """Inputs a hair (2**-12 LSB) below a level: the fake quantiser and the graph's Quantise agree."""
    fq = fake_quantised("ptq", 8, "per-channel", "global")
    net = fake_to_true(fq, input_shape=SHAPE)
    eps = net.input_eps
    k = torch.arange(-100, 100, dtype=torch.float32).repeat(3 * SIZE * SIZE // 200 + 1)[: 3 * SIZE * SIZE]
    x = ((k - 2.0**-12) * eps).reshape(1, 3, SIZE, SIZE).float()
    q_fq = torch.round(fq.get_submodule(net.input_quantiser.name)(x) / eps).long().numpy()
    np.testing.assert_array_equal(net.quantise_input(x), q_fq)


@pytest.mark.parametrize("signed", [False, True])
def test_rounding_activation_is_half_up_as_the_requantiser(signed):
    """Exact halves (codes * 0.5 on a grid of eps): FQ's rounding and RequantShift's both go up."""
    act = (PACTSignedAct if signed else PACTUnsignedAct)(n_levels=256, init_clip=4.0, rounding=True, act_kind="identity")
    act.started.fill_(True)
    eps = float(act.get_eps())
    codes = torch.arange(-64 if signed else 0, 64, dtype=torch.float64)
    fq = torch.round(act((codes + 0.5).float() * eps) / eps).long().numpy()
    mul, add = constants(np.asarray(1.0), np.asarray(0.5), 16, rounding=True)
    tq = RequantShift(div=2**16, lo=act.int_range[0], hi=act.int_range[1]).run(codes.long().numpy(), mul, add)
    np.testing.assert_array_equal(fq, tq)
    assert fq[-1] == 64  # 63.5 -> 64: half up, not to even


def test_f2t_fails_rather_than_clamp_an_output_beyond_int32():
    fq = fake_quantised("ptq", 8, "per-channel", "global")
    with torch.no_grad():
        fq.fc.bias.fill_(1e6)
    with pytest.raises(Exception, match="bias reaches|beyond int32"):
        fake_to_true(fq, input_shape=SHAPE)
