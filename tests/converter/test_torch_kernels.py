"""Conv, ConvRequant and RequantShift through torch's kernels (int8 GEMM, float32 convolution, int32
requantisation) against their docstrings in Python integers, on generated layers: the accumulator
from torch in float64 (exact for these sizes), the requantisation one value at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conv_reference import requant_formula, torch_conv
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from qlspec.engine.ops import ConvRequant
from qlspec.engine.torch_kernels import Int32Requant, conv_requant, int8_gemm_is_exact


@st.composite
def layers(draw):
    """(op, x, w, b, mul, add): a ConvRequant layer of any shape the fast path may take, and some it refuses."""
    kind = draw(st.sampled_from(["pointwise", "depthwise", "dense", "grouped"]))
    c = draw(st.integers(1, 6)) * (2 if kind == "grouped" else 1)
    group = {"depthwise": c, "grouped": 2}.get(kind, 1)
    m = c if kind == "depthwise" else draw(st.integers(1, 8)) * group
    k = (1, 1) if kind == "pointwise" else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    strides = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = (0, 0, 0, 0) if kind == "pointwise" else tuple(draw(st.integers(0, 2)) for _ in range(4))
    dilations = (1, 1) if kind == "pointwise" else (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    x_dtype = draw(st.sampled_from([np.uint8, np.int8, np.int16]))
    info = np.iinfo(x_dtype)
    n, h, wd = draw(st.integers(1, 3)), draw(st.integers(5, 9)), draw(st.integers(5, 9))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = rng.integers(info.min, int(info.max) + 1, (n, c, h, wd)).astype(x_dtype)
    w = rng.integers(-128, 128, (m, c // group, *k)).astype(np.int8)
    b = rng.integers(-5000, 5000, m).astype(np.int32) if draw(st.booleans()) else None
    shift = draw(st.integers(0, 24))
    lo, hi = draw(st.sampled_from([(0, 255), (-128, 127), (0, 15), (-8, 7), (-32768, 32767)]))
    per_channel = draw(st.booleans())
    shape = (m, 1, 1) if per_channel else ()
    mul = rng.integers(-(1 << 14), 1 << 14, shape) if draw(st.booleans()) else rng.integers(0, 1 << 14, shape)
    if draw(st.booleans()):
        mul = np.where(rng.random(shape) < 0.2, 0, mul)  # channels that ignore their accumulator
    add = rng.integers(-(1 << (shift + 9)), 1 << (shift + 9), shape)
    op = ConvRequant(div=1 << shift, lo=lo, hi=hi, strides=strides, pads=pads, dilations=dilations, group=group)
    return op, x, w, b, mul.astype(np.int32), add.astype(np.int64)


def docstring(op, x, w, b, mul, add):
    acc = torch_conv(x.astype(np.int64), w.astype(np.int64), b, op.strides, op.pads, op.dilations, op.group)
    full = lambda p: np.broadcast_to(np.asarray(p).reshape(1, -1, 1, 1) if np.ndim(p) else p, acc.shape)  # noqa: E731
    return requant_formula(acc, full(mul), full(add), op.div, op.lo, op.hi)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers())
def test_conv_requant_equals_its_docstring(layer):
    op, x, w, b, mul, add = layer
    got = op.run(x, w, b, mul, add)
    assert np.array_equal(got, docstring(op, x, w, b, mul, add))


@pytest.mark.parametrize("x_dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("kind", ["pointwise", "depthwise"])
def test_eight_bit_layers_take_the_torch_path(x_dtype, kind):
    # the default network's layers: the test above would pass on the numpy path alone
    rng = np.random.default_rng(0)
    c = 16
    x = rng.integers(np.iinfo(x_dtype).min, int(np.iinfo(x_dtype).max) + 1, (2, c, 10, 10)).astype(x_dtype)
    w = rng.integers(-128, 128, (c, 1 if kind == "depthwise" else c, *((3, 3) if kind == "depthwise" else (1, 1)))).astype(np.int8)
    mul = rng.integers(1, 1 << 10, (c, 1, 1)).astype(np.int32)
    add = rng.integers(-(1 << 28), 1 << 28, (c, 1, 1)).astype(np.int32)
    pads = (1, 1, 1, 1) if kind == "depthwise" else (0, 0, 0, 0)
    op = ConvRequant(div=1 << 21, lo=0, hi=255, pads=pads, group=c if kind == "depthwise" else 1)
    got = conv_requant(op, x, w, None, mul, add)
    assert got is not None
    assert got.strides[1] == 1  # NHWC memory, what the next pointwise layer reads without a copy
    assert np.array_equal(got, docstring(op, x, w, None, mul, add))
    assert np.array_equal(op.run(got, w, None, mul, add), op.run(np.ascontiguousarray(got), w, None, mul, add))


@settings(max_examples=500, deadline=None)
@given(
    offset=st.integers(-(1 << 20), 1 << 20),
    mul=st.integers(-(1 << 16), 1 << 16),
    add=st.integers(-(1 << 36), 1 << 36),
    shift=st.integers(0, 30),
    lo_hi=st.sampled_from([(0, 255), (-128, 127), (0, 1), (3, 3), (-2, 5)]),
    bound=st.integers(0, 1 << 24),
)
@example(offset=0, mul=1 << 15, add=0, shift=0, lo_hi=(0, 255), bound=1 << 24)  # steps of more than one output level
@example(offset=0, mul=0, add=300, shift=0, lo_hi=(0, 255), bound=10)  # a constant channel above hi
def test_int32_requant_on_every_edge(offset, mul, add, shift, lo_hi, bound):
    """Int32Requant against the formula on the accumulator values where it can go wrong: the ends of
    the reachable range, its clamping interval and their neighbours."""
    lo, hi = lo_hi
    plan = Int32Requant.plan(np.array([offset]), np.array([mul]), np.array([add]), shift, lo, hi, bound)
    a = add + (1 << shift) // 2 + offset * mul  # the constant of (r*mul + a) >> shift, r = acc - offset
    if plan is None:  # refused: only when int32 cannot hold the constant or a reachable value's products
        ends = [r - offset for r in (-bound, bound)]
        assert abs(a) >= 1 << 31 or max(max(abs(r * mul), abs(r * mul + a)) for r in ends) >= 1 << 31
        return
    accs = {-bound, bound, 0}
    for r in (int(plan.acc_lo[0]), int(plan.acc_hi[0])):
        accs |= {r + offset + d for d in (-2, -1, 0, 1, 2)}
    accs = sorted(a for a in accs if -bound <= a <= bound)
    raw = torch.tensor([a - offset for a in accs], dtype=torch.int32).reshape(-1, 1)
    out = torch.empty_like(raw)
    plan.into(out, raw.clone())
    want = [min(max((a * mul + add + (1 << shift) // 2) >> shift, lo), hi) for a in accs]
    assert out.reshape(-1).tolist() == want


def test_torch_float_rounding_modes_send_float_layers_back_to_numpy():
    """A user's `torch.set_float32_matmul_precision("medium")` lets oneDNN round float32 products to
    bf16; the engine's float32 kernels must then step aside, its int8 GEMM need not."""
    from qlspec.engine.exact_matmul import exact_matmul

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (2, 8, 6, 6)).astype(np.uint8)
    dw = ConvRequant(div=1 << 10, lo=0, hi=255, pads=(1, 1, 1, 1), group=8)
    pw = ConvRequant(div=1 << 10, lo=0, hi=255)
    w_dw = rng.integers(-128, 128, (8, 1, 3, 3)).astype(np.int8)
    w_pw = rng.integers(-128, 128, (8, 8, 1, 1)).astype(np.int8)
    mul, add = np.full((8, 1, 1), 3, np.int32), np.full((8, 1, 1), 1 << 16, np.int32)
    a = rng.integers(-(1 << 7), 1 << 7, (4, 300)).astype(np.int64) * 101  # products bf16 cannot hold
    b = rng.integers(-(1 << 7), 1 << 7, (300, 5)).astype(np.int64)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        assert conv_requant(dw, x, w_dw, None, mul, add) is None
        assert (conv_requant(pw, x, w_pw, None, mul, add) is not None) == int8_gemm_is_exact()
        assert np.array_equal(dw.run(x, w_dw, None, mul, add), docstring(dw, x, w_dw, None, mul, add))
        assert np.array_equal(exact_matmul(a, b), a @ b)
    finally:
        torch.set_float32_matmul_precision(before)
    assert conv_requant(dw, x, w_dw, None, mul, add) is not None


def test_without_vnni_the_int8_gemm_is_measured_inexact_and_avoided(tmp_path):
    """On a CPU without VNNI oneDNN's int8 GEMM saturates 16-bit pair sums. `ONEDNN_MAX_CPU_ISA=AVX2`
    makes this machine such a CPU for one process: the engine must notice and stay exact."""
    import os
    import subprocess
    import sys

    script = tmp_path / "probe.py"
    script.write_text(
        "import numpy as np\n"
        "from qlspec.engine.torch_kernels import int8_gemm_is_exact, conv_requant\n"
        "from qlspec.engine.ops import ConvRequant\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.integers(0, 256, (2, 64, 6, 6)).astype(np.uint8)\n"
        "w = rng.integers(-128, 128, (32, 64, 1, 1)).astype(np.int8)\n"
        "op = ConvRequant(div=1 << 12, lo=0, hi=255)\n"
        "mul, add = np.full((32, 1, 1), 5, np.int32), np.full((32, 1, 1), 1 << 19, np.int32)\n"
        "acc = np.einsum('nchw,mc->nmhw', x.astype(np.int64), w[:, :, 0, 0].astype(np.int64))\n"
        "want = np.clip((acc * 5 + (1 << 19) + (1 << 11)) >> 12, 0, 255)\n"
        "print(int8_gemm_is_exact(), np.array_equal(op.run(x, w, None, mul, add), want))\n"
    )
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2")
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]


def test_reversed_and_foreign_byte_order_inputs():
    """torch.from_numpy refuses negative strides and non-native byte order: such inputs are copied first."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (2, 4, 7, 7)).astype(np.uint8)[:, :, ::-1, ::-1]
    w = rng.integers(-128, 128, (4, 1, 3, 3)).astype(np.int8)
    mul, add = np.full((4, 1, 1), 7, np.int32), np.full((4, 1, 1), 1 << 14, np.int32)
    op = ConvRequant(div=1 << 12, lo=0, hi=255, pads=(1, 1, 1, 1), group=4)
    assert np.array_equal(op.run(x, w, None, mul, add), docstring(op, x, w, None, mul, add))
    x16 = x.astype(">i2")
    assert np.array_equal(op.run(x16, w, None, mul, add), docstring(op, x16.astype(np.int16), w, None, mul, add))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers())
def test_conv_accumulators_equal_torch_in_float64(layer):
    """Conv alone (the unfused graphs of rungs TQ and ONNX) through the same kernels: int32, exact."""
    op, x, w, b, _, _ = layer
    got = op.conv.run(x, w, b)
    want = torch_conv(x.astype(np.int64), w.astype(np.int64), b, op.strides, op.pads, op.dilations, op.group)
    assert np.array_equal(got, want)


@settings(max_examples=300, deadline=None)
@given(
    dtype=st.sampled_from([np.uint8, np.int8, np.int16, np.int32]),
    nhwc=st.booleans(),
    per_channel=st.booleans(),
    shift=st.integers(0, 30),
    lo_hi=st.sampled_from([(0, 255), (-128, 127), (0, 15), (-8, 7)]),
    scale=st.integers(0, 31),
    seed=st.integers(0, 2**32 - 1),
)
def test_requant_shift_equals_its_docstring(dtype, nhwc, per_channel, shift, lo_hi, scale, seed):
    """RequantShift on an NCHW tensor (the accumulator of an unfused Conv, in NHWC memory or not)
    against its formula in Python integers, with values up to 2**scale."""
    from qlspec.engine.ops import RequantShift

    rng = np.random.default_rng(seed)
    c = int(rng.integers(1, 6))
    info = np.iinfo(dtype)
    reach = min(1 << scale, int(info.max))
    x = rng.integers(max(-reach, int(info.min)), reach + 1, (2, 5, 4, c) if nhwc else (2, c, 5, 4)).astype(dtype)
    x = x.transpose(0, 3, 1, 2) if nhwc else x
    shape = (c, 1, 1) if per_channel else ()
    mul = rng.integers(-(1 << 12), 1 << 12, shape).astype(np.int32)
    add = rng.integers(-(1 << (shift + 8)), 1 << (shift + 8), shape).astype(np.int64)
    lo, hi = lo_hi
    op = RequantShift(div=1 << shift, lo=lo, hi=hi)
    full = lambda p: np.broadcast_to(p.reshape(1, -1, 1, 1) if p.ndim else p, x.shape)  # noqa: E731
    assert np.array_equal(op.run(x, mul, add), requant_formula(x, full(mul), full(add), 1 << shift, lo, hi))


def test_malformed_layers_get_the_numpy_paths_errors():
    from qlspec.engine.ops import Conv
    from qlspec.errors import GraphError

    x = np.zeros((1, 4, 5, 5), np.uint8)
    for w, b in (
        (np.zeros((4, 4, 1), np.int8), None),
        (np.zeros((4, 3, 1, 1), np.int8), None),
        (np.zeros((4, 4, 1, 1), np.int8), np.zeros(3, np.int32)),
    ):
        with pytest.raises((GraphError, ValueError)):
            Conv().run(x, w, b)
    with pytest.raises(GraphError, match="weight must be"):
        Conv().run(x, np.zeros((4, 4, 1), np.int8))
