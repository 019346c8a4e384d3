"""F2T exactness: the TQ network against the fake-quantised one, layer by layer and end to end."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from export_toys import CASES, SIZE, fake_quantised, images, layerwise_diffs, output_gap_and_bound, unexplained_flips

from qlspec.export import ExportError, fake_to_true, histogram
from qlspec.export.f2t import fit_float32
from qlspec.export.integer_net import Layer, TensorSpec, _Requant
from qlspec.quant import QuantConfig, float_to_fake
from qlspec.spec.models import Export

D = Export().requant_bits  # the spec's default



pytestmark = pytest.mark.usefixtures("one_thread")


_CACHE: dict = {}


def integerised(mode, bits, gran, pool):
    key = (mode, bits, gran, pool)
    if key not in _CACHE:
        fq = fake_quantised(mode, bits, gran, pool)
        _CACHE[key] = (fq, fake_to_true(fq, requant_bits=D, input_shape=(1, 3, SIZE, SIZE)))
    return _CACHE[key]


@pytest.mark.parametrize("mode,bits,gran,pool", CASES)
def test_each_requantiser_is_within_one_lsb_of_fq_given_the_same_input(mode, bits, gran, pool):
    fq, inet = integerised(mode, bits, gran, pool)
    x, _ = images(64, 11)
    diffs = layerwise_diffs(fq, inet, x)
    for source, d in diffs.items():
        assert int(d.abs().max()) <= 1, f"{source}: {histogram(d.numpy())}"


@pytest.mark.parametrize("mode,bits,gran,pool", CASES)
def test_every_requantiser_flip_is_float32_rounding(mode, bits, gran, pool):
    """How many values flip depends on the CPU; that each flip sits within float32's derived error
    band of a level does not (see `unexplained_flips`)."""
    fq, inet = integerised(mode, bits, gran, pool)
    x, _ = images(64, 11)
    for source, (flips, unexplained) in unexplained_flips(fq, inet, x).items():
        assert unexplained == 0, f"{source}: {unexplained} of {flips} flips are not float32 rounding"


def test_flip_check_catches_an_add_off_by_a_quarter_lsb():
    fq, inet = integerised("ptq", 8, "per-channel", "global")
    i, rq = next((i, l) for i, l in enumerate(inet.layers) if l.op == "RequantShift")
    add = rq.consts["add"] + rq.attrs["div"] // 4
    broken = dataclasses.replace(inet, layers=inet.layers[:i] + (dataclasses.replace(rq, consts={**rq.consts, "add": add}),) + inet.layers[i + 1:])
    flips = unexplained_flips(fq, broken, images(16, 11)[0])
    assert flips[rq.source][1] > 0


@pytest.mark.parametrize("mode,bits,gran,pool", CASES)
def test_tq_output_is_within_the_derived_bound_of_fq(mode, bits, gran, pool):
    """TQ's output departs from FQ's only by what upstream flips and float32 rounding can explain.

    A fraction of agreeing outputs is no invariant: which requantiser input lands a hair from a level
    depends on float rounding, hence on the CPU. The bound of `output_gap_and_bound` is derived, so it
    holds everywhere; where no Gemm input flipped it is half an LSB plus float32's worst case."""
    fq, inet = integerised(mode, bits, gran, pool)
    x, _ = images(64, 12)
    gap, bound, _ = output_gap_and_bound(fq, inet, x)
    assert np.all(np.abs(gap) <= bound), histogram(gap - np.clip(gap, -bound, bound))


def test_output_bound_catches_a_wrong_bias():
    fq, inet = integerised("ptq", 8, "per-channel", "global")
    gemm = inet.layers[-1]
    broken = dataclasses.replace(inet, layers=inet.layers[:-1] + (dataclasses.replace(
        gemm, consts={**gemm.consts, "bias": gemm.consts["bias"] + 3}),))
    gap, bound, _ = output_gap_and_bound(fq, broken, images(8, 12)[0])
    assert np.any(np.abs(gap) > bound)


def test_input_quantiser_maps_pixels_to_pixel_minus_128():
    _, inet = integerised("ptq", 8, "per-channel", "global")
    x, pixels = images(8, 13)
    assert inet.input_eps == 1 / 128 and inet.input_rounding == "floor"
    assert torch.equal(inet.quantise_input(x), pixels.long() - 128)


def test_layers_and_eps_propagation():
    fq, inet = integerised("qat", 8, "per-channel", "global")
    ops = [l.op for l in inet.layers]
    assert ops == ["Conv", "RequantShift"] * 5 + ["SumPool", "RequantShift", "Flatten", "Gemm"]
    conv1 = inet.layers[0]
    assert conv1.output.eps.shape == (4,)  # per channel: eps_w * eps_in
    np.testing.assert_allclose(conv1.output.eps, fq.conv1.get_eps_w().double().numpy().ravel() / 128)
    assert "bias" not in conv1.consts  # folded into the requantiser
    rq = inet.layers[1]
    assert rq.consts["mul"].shape == (4,) and rq.attrs["div"] == 2**D and rq.attrs["signed"] is False
    assert (rq.attrs["lo"], rq.attrs["hi"]) == (0, 255)
    pool_rq = inet.layers[-3]
    assert pool_rq.attrs["mean_k"] == 16 and pool_rq.consts["mul"].shape == ()
    fc = inet.layers[-1]
    assert "bias" in fc.consts
    np.testing.assert_allclose(inet.output_eps, fc.output.eps)
    assert fc.output.eps.shape == (5,)


def test_per_layer_weights_give_scalar_eps():
    _, inet = integerised("ptq", 8, "per-layer", "global")
    assert inet.layers[0].output.eps.shape == ()


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


@pytest.mark.parametrize("seed", range(3))
def test_tq_requant_matches_its_docstring(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-(2**20), 2**20, size=(2, 3, 4, 4))
    mul = rng.integers(-(2**20), 2**20, size=3)
    add = rng.integers(-(2**30), 2**30, size=3)
    shift = int(rng.integers(0, 25))
    t = TensorSpec("y", (1, 3, 4, 4), np.ones(()), -128, 127, True, 256)
    layer = Layer("RequantShift", "x", t, {"mul": mul, "add": add}, {"div": 2**shift, "lo": -128, "hi": 127})
    got = _Requant(layer, 4)(torch.from_numpy(x).double()).long().numpy()
    want = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        c = idx[1]
        want[idx] = min(max((int(x[idx]) * int(mul[c]) + int(add[c])) // 2**shift, -128), 127)  # Python ints: exact floor
    assert np.array_equal(got, want)
