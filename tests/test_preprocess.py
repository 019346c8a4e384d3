"""The spec's preprocess section: channel order and normalisation reach the network input, and the
input quantiser derives from the normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qlspec.export import fake_to_true
from qlspec.export.f2t import Integerised
from qlspec.nets.mobilenet_v1 import MobileNetV1
from qlspec.preprocess import DEFAULT, InputTransform, input_grid
from qlspec.quant import calibrate, float_to_fake
from qlspec.spec.models import AppSpec
from qlspec.stages.quantise import quant_config


def test_default_keeps_bgr_and_normalises_as_3ddfa():
    img = np.zeros((1, 2, 2, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 0, 128, 255  # B, G, R
    x = DEFAULT(img)
    assert x.shape == (1, 3, 2, 2) and x.dtype == torch.float32
    np.testing.assert_allclose(x[0, :, 0, 0].numpy(), [-127.5 / 128, 0.5 / 128, 127.5 / 128])


def test_rgb_flips_the_channels_and_rejects_float_images():
    img = np.zeros((1, 2, 2, 3), np.uint8)
    img[..., 0] = 10
    x = InputTransform(0.0, 1.0, rgb=True)(img)
    assert x[0, 2, 0, 0] == 10 and x[0, 0, 0, 0] == 0
    with pytest.raises(ValueError):
        DEFAULT(np.zeros((1, 4, 4, 3), np.float32))


def _quantiser_codes(mean: float, std: float) -> tuple[Integerised, np.ndarray]:
    """The input codes the F2T graph gives for all 256 pixel values, through the spec."""
    spec = AppSpec.model_validate(
        {"name": "x", "preprocess": {"normalise": {"mean": mean, "std": std}}, "quantisation": {"algorithm": "ptq"}}
    )
    prep = InputTransform.from_spec(spec.preprocess)
    torch.manual_seed(0)
    pixels = np.random.default_rng(0).integers(0, 256, (4, 120, 120, 3), dtype=np.uint8)
    x = prep(pixels)
    float_net = MobileNetV1(0.25).train()
    with torch.no_grad():
        float_net(x)  # BN statistics of these images
    fq = float_to_fake(float_net.eval(), quant_config(spec), x)
    calibrate(fq, [x], method="percentile")
    net = fake_to_true(fq, input_shape=(1, 3, 120, 120))
    return net, net.quantise_input(prep(np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, -1)))


def test_changing_normalise_changes_the_input_quantiser():
    net, q = _quantiser_codes(127.5, 128.0)
    node = net.input_quantiser
    assert node.attr_dict == {"eps": 1 / 128, "lo": -128, "hi": 127, "rounding": "floor"}
    assert np.array_equal(q[0, 0].ravel(), np.arange(256) - 128)
    net, q = _quantiser_codes(0.0, 255.0)
    assert net.input_quantiser.attr("rounding") == "half_up" and (net.input_quantiser.attr("lo"), net.input_quantiser.attr("hi")) == (
        0,
        255,
    )
    assert np.array_equal(q[0, 0].ravel(), np.arange(256))  # unsigned: pixel p -> code p
    assert net.input_info.describe().startswith("u8")


@settings(max_examples=200, deadline=None)
@given(mean=st.floats(-300, 300, allow_nan=False), std=st.floats(1e-3, 1e4, allow_nan=False))
def test_the_input_grid_is_one_to_one_or_refused(mean, std):
    """Any normalisation either gets a grid on which the 256 pixels map to 256 codes in range, as the
    float32 quantiser computes them, or a clear error; never a grid that merges pixels."""
    try:
        grid = input_grid(mean, std)
    except ValueError as e:
        assert "do not map one-to-one" in str(e)
        return
    x = (np.arange(256, dtype=np.float32) - np.float32(mean)) / np.float32(std)
    v = x / np.float32(grid.eps)
    q = np.floor(v) if grid.rounding == "floor" else np.floor(v + np.float32(0.5))
    assert len(np.unique(q)) == 256 and grid.lo <= q.min() and q.max() <= grid.hi


def numpy_grid(mean: float, std: float):
    """The grid as numpy float32 arithmetic computes it: the reference the pure-Python one must equal."""
    with np.errstate(all="ignore"):
        x = (np.arange(256, dtype=np.float32) - np.float32(mean)) / np.float32(std)
        rounding = "floor" if abs((mean % 1) - 0.5) < 0.25 else "half_up"
        for signed in (False, True):
            eps = (
                np.float32(np.float32(2) * np.float32(128 / std) / np.float32(256))
                if signed
                else np.float32(np.float32(255 / std) / np.float32(255))
            )
            v = x / eps
            q = np.floor(v) if rounding == "floor" else np.floor(v + np.float32(0.5))
            lo, hi = (-128, 127) if signed else (0, 255)
            if np.isfinite(q).all() and q.min() >= lo and q.max() <= hi and len(np.unique(q)) == 256:
                return float(eps), signed, rounding
    return None


@settings(max_examples=300, deadline=None)
@given(
    mean=st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.sampled_from([0.0, 127.5, 128.0, 127.75, 127.5000001])),
    std=st.one_of(
        st.floats(1e-30, 1e30, allow_nan=False, exclude_min=True), st.sampled_from([1.0, 128.0, 127.99999, 255.0, 256.0, 1e-40, 3e38])
    ),
)
def test_pure_python_grid_equals_numpy_float32(mean, std):
    """`input_grid` runs in spec validation without numpy; it must decide exactly as float32 numpy does."""
    try:
        grid = input_grid(mean, std)
        got = (grid.eps, grid.signed, grid.rounding)
    except ValueError:
        got = None
    assert got == numpy_grid(mean, std)


def test_a_normalisation_8_bits_cannot_hold_is_a_located_spec_error(spec_file):
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "qlspec", "validate", spec_file("name: x\npreprocess:\n  normalise: {mean: 50, std: 1}\n")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "preprocess.normalise" in r.stderr and "one-to-one" in r.stderr and "app.yaml:3:" in r.stderr
