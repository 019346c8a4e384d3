"""`target.output_stage: armcl-native`: 8-bit products end in ARM-CL's fused fixed-point output stage.

Not the contract, so the test does not compare with the reference engine's RequantShift; it checks
that the generated layers compute exactly ACL 20.08's documented arithmetic (reference/armcl-and-
peers.md B.4: SRDHM, then a rounding shift half away from zero, offset, clamps) for the constants the
generator derives, and that the exact route is untouched."""

from __future__ import annotations

import numpy as np
import pytest
from armcl_helpers import node, random_input

from qlspec.codegen.build import build_project, run_binary
from qlspec.codegen.project import write_project
from qlspec.codegen.toolchain import armcl_toolchain
from qlspec.engine.ops import Conv, Gemm
from qlspec.graph.ir import TensorInfo, make_graph

pytestmark = pytest.mark.slow


def graph():
    r = np.random.default_rng(11)
    c = {
        "w": r.integers(-128, 128, (16, 3, 3, 3)).astype(np.int8),
        "b": r.integers(-5000, 5000, 16).astype(np.int32),
        "m": r.integers(1, 1 << 12, (1, 16, 1, 1)).astype(np.int32),
        "a": r.integers(-1 << 14, 1 << 14, (1, 16, 1, 1)).astype(np.int32),
        "wl": r.integers(-128, 128, (24, 7)).astype(np.int8),
        "ml": r.integers(1 << 20, 1 << 30, 7).astype(np.int32),
        "al": r.integers(-1 << 30, 1 << 30, 7).astype(np.int64),
    }
    nodes = [
        node("ConvRequant", "conv", ["x", "w", "b", "m", "a"], ["y"], div=1 << 17, lo=-128, hi=127, pads=(1, 1, 1, 1)),
        node("GemmRequant", "linear", ["v", "wl", "", "ml", "al"], ["z"], div=1 << 31, lo=0, hi=200),
    ]
    inputs = {"x": TensorInfo((1, 3, 8, 9), 8, True), "v": TensorInfo((2, 24), 8, False)}
    return make_graph("native", inputs, nodes, c, ["y", "z"])


def acl_output_stage(acc, mul, add, shift, lo, hi):
    """ACL 20.08's fixed-point output stage on int64 accumulators, with the generator's constants."""
    zo = 128 if lo < 0 else 0
    b_acl = (2 * add + mul) // (2 * mul)
    bits = np.array([int(v).bit_length() for v in mul.reshape(-1)]).reshape(mul.shape)
    qm, s = mul << (31 - bits), shift - bits
    x = acc + b_acl
    assert (np.abs(x) < 2**31).all() and (s >= 0).all()
    v = (x * qm + (1 << 30)) >> 31  # SRDHM
    mask = (1 << s) - 1
    v = (v >> s) + ((v & mask) > ((mask >> 1) + (v < 0)))  # rounding shift, half away from zero
    v = np.clip(np.clip(v + zo, 0, 255), lo + zo, hi + zo)
    return v - zo


def test_native_layers_compute_acls_arithmetic(tmp_path):
    g = graph()
    tc = armcl_toolchain()
    low = write_project(g, tmp_path / "p", output_stage="armcl-native")
    assert low.kernels == {"conv": "acl-native", "linear": "acl-native"}
    binary = build_project(tmp_path / "p", tc)
    rng = np.random.default_rng(0)
    feeds = [random_input(rng, g.tensors[t], 0.2) for t in g.inputs]
    y, z = run_binary(binary, feeds, tc).outputs
    k = g.constants
    acc = Conv(pads=(1, 1, 1, 1)).run(feeds[0], k["w"])
    m = k["m"].astype(np.int64)
    want_y = acl_output_stage(acc, m, k["a"] + k["b"].reshape(1, 16, 1, 1) * m, 17, -128, 127)
    acc = Gemm().run(feeds[1], k["wl"])
    want_z = acl_output_stage(acc, k["ml"].astype(np.int64), k["al"].astype(np.int64), 31, 0, 200)
    assert np.array_equal(y, want_y) and np.array_equal(z, want_z)
    exact = write_project(g, tmp_path / "q")
    assert set(exact.kernels.values()) == {"acl-gemmlowp"}
