"""Small graphs of every IR op, generated as ARM-CL projects (cross-built once per module, run under
qemu-aarch64) and as portable `cpu` projects (built and run here), on inputs across each tensor's
whole range (hypothesis picks more), against the reference engine bit for bit. Between them they take every kernel route of the generator: ACL's
GEMMLowp core with signed and unsigned operands, depthwise, grouped and wide direct convolutions,
direct GEMMs, and requantisers in int32 lanes at the very edge of their proven bound and in int64
lanes."""

from __future__ import annotations

import numpy as np
import pytest
from armcl_helpers import Built, node, random_input
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qlspec.graph.ir import TensorInfo, make_graph

pytestmark = pytest.mark.slow

I32 = 1 << 31


def convs_graph():
    """Convolutions and products of every route, pools and standalone requantisers."""
    r = np.random.default_rng(7)
    c = {
        "w1": r.integers(-128, 128, (8, 3, 3, 3)).astype(np.int8),
        "b1": r.integers(-3000, 3000, 8).astype(np.int32),
        "m1": r.integers(1, 300, (1, 8, 1, 1)).astype(np.int32),
        "a1": r.integers(-2000, 2000, (1, 8, 1, 1)).astype(np.int32),
        "w2": r.integers(-128, 128, (8, 1, 3, 3)).astype(np.int8),
        "m2": r.integers(1, 50, (8, 1, 1)).astype(np.int32),
        "a2": np.array(-77, np.int32),
        "w3": r.integers(-128, 128, (6, 4, 1, 3)).astype(np.int8),
        "m3": np.array(37, np.int32),
        "a3": np.array(11, np.int32),
        "ms": np.array(5, np.int32),
        "as": np.array(-3, np.int32),
        "mg": r.integers(1, 9, (1, 6, 1, 1)).astype(np.int32),
        "ag": np.zeros((1, 6, 1, 1), np.int32),
        "wl": r.integers(-128, 128, (10, 6)).astype(np.int8),
        "bl": r.integers(-500, 500, 10).astype(np.int32),
        "ml": r.integers(100, 4000, 10).astype(np.int32),
        "al": r.integers(-50, 50, 10).astype(np.int32),
        "wm": r.integers(0, 256, (10, 5)).astype(np.int16),
        "mm": np.array(3, np.int32),
        "am": np.array(0, np.int32),
        "ww": r.integers(-3000, 3000, (4, 3, 2, 2)).astype(np.int16),
        "bw": r.integers(-9, 9, 4).astype(np.int32),
        "mw": np.array(70001, np.int32),
        "aw": np.array(123456, np.int64),
        "me": r.integers(-9, 9, (1, 8, 5, 1)).astype(np.int32),
        "ae": r.integers(-99, 99, (1, 1, 5, 11)).astype(np.int32),
        "wp": r.integers(-128, 128, (5, 8, 1, 1)).astype(np.int8),
        "mp": r.integers(1, 40, (1, 5, 1, 1)).astype(np.int32),
        "ap": np.array(-5, np.int32),
    }
    nodes = [
        node(
            "ConvRequant", "conv_acl", ["x", "w1", "b1", "m1", "a1"], ["y1"], div=1 << 10, lo=0, hi=255, pads=(1, 1, 1, 1), strides=(2, 1)
        ),
        node(
            "ConvRequant",
            "conv_dw",
            ["y1", "w2", "", "m2", "a2"],
            ["y2"],
            div=1 << 9,
            lo=-128,
            hi=127,
            group=8,
            pads=(2, 2, 2, 2),
            dilations=(2, 2),
        ),
        node("ConvRequant", "conv_grouped", ["y2", "w3", "", "m3", "a3"], ["y3"], div=1 << 8, lo=-8, hi=7, group=2, pads=(0, 1, 0, 1)),
        node("MaxPool", "maxpool", ["y3"], ["y4"], kernel_shape=(2, 3), strides=(2, 2), pads=(1, 1, 0, 1), ceil_mode=True),
        node("SumPool", "sumpool", ["y4"], ["s5"], kernel_shape=(2, 2), strides=(1, 1), pads=(1, 0, 0, 1)),
        node("RequantShift", "rq_scalar", ["s5", "ms", "as"], ["y5"], div=4, lo=-128, hi=127),
        node("GlobalSumPool", "gsp", ["y5"], ["s6"]),
        node("RequantShift", "rq_channels", ["s6", "mg", "ag"], ["y6"], div=2, lo=-100, hi=100),
        node("Flatten", "flat", ["y6"], ["f6"], axis=1),
        node("GemmRequant", "gemm_acl", ["f6", "wl", "bl", "ml", "al"], ["y7"], div=1 << 12, lo=0, hi=255, trans_b=True),
        node("MatMulRequant", "matmul_u8", ["y7", "wm", "mm", "am"], ["y8"], div=1 << 6, lo=0, hi=1023),
        node("Conv", "conv_wide", ["x", "ww", "bw"], ["acc9"], strides=(2, 2)),
        node("RequantShift", "rq_int64", ["acc9", "mw", "aw"], ["y9"], div=1 << 20, lo=-2000, hi=2000),
        node("RequantShift", "rq_elementwise", ["y1", "me", "ae"], ["y10"], div=8, lo=-300, hi=300),
        node("ConvRequant", "conv_pointwise", ["y1", "wp", "", "mp", "ap"], ["y11"], div=1 << 9, lo=-128, hi=127),
    ]
    return make_graph("convs", {"x": TensorInfo((1, 3, 9, 11), 8, True)}, nodes, c, ["y8", "y9", "y10", "y5", "y11"])


def edge_graph():
    """Linear layers whose requantiser's worst case sits just below 2^31 (int32 lanes, no slack) and
    their twins with mul + 1 (past the bound: int64 lanes), with shifts 0 (every bit of x*mul + add
    shows) and 3 (floor of negatives shows), fed the inputs that reach the worst case."""
    k, n = 64, 14
    w = np.where((np.arange(k * n).reshape(n, k) % 3) == 0, 127, -128).astype(np.int8)
    worst = int(np.abs(w.astype(np.int64)).sum(axis=1).max()) * 128
    bias = 1000
    mul = (I32 - 1 - bias - 4) // worst
    c = {"w": w, "m32": np.array(mul, np.int32), "m64": np.array(mul + 1, np.int32), "a": np.array(bias, np.int32)}
    nodes = [
        node(
            "GemmRequant",
            f"edge_{lanes}_s{s}",
            ["x", "w", "", f"m{lanes}", "a"],
            [f"y{lanes}_{s}"],
            div=1 << s,
            lo=-(1 << 31),
            hi=(1 << 31) - 1,
            trans_b=True,
        )
        for lanes in (32, 64)
        for s in (0, 3)
    ]
    # int32 planes requantised in int64 lanes along their rows (7 = one vector of 4 and a tail of 3),
    # multipliers that saturate the clip at both ends
    c.update(mz=np.array([1, -3, 65537], np.int32).reshape(1, 3, 1, 1), az=np.array([0, -5, 2**40], np.int64).reshape(1, 3, 1, 1))
    nodes += [
        node("RequantShift", f"planes_s{s}", ["z", "mz", "az"], [f"z{s}"], div=1 << s, lo=-(1 << 31), hi=(1 << 31) - 1) for s in (0, 3)
    ]
    # per-column constants past int32 (int64 lanes, a vector of constants per step, a tail of 2)
    r = np.random.default_rng(3)
    c.update(mc=r.integers(-(2**20), 2**20, n).astype(np.int32), ac=r.integers(-(2**40), 2**40, n).astype(np.int64))
    nodes.append(
        node("GemmRequant", "edge_cols", ["x", "w", "", "mc", "ac"], ["ycols"], div=1 << 8, lo=-(1 << 31), hi=(1 << 31) - 1, trans_b=True)
    )
    inputs = {"x": TensorInfo((3, k), 8, True), "z": TensorInfo((1, 3, 2, 7), 32, True)}
    return make_graph("edge", inputs, nodes, c, [n.outputs[0] for n in nodes])


def moves_graph():
    """Elementwise ops, residual adds and data movement, mixed container types, and the float input quantiser."""
    c = {"pad_src": np.arange(-3, 3, dtype=np.int8)}
    nodes = [
        node("Quantise", "q_floor", ["f"], ["qf"], eps=1 / 16, lo=-128, hi=127, rounding="floor"),
        node("Quantise", "q_half", ["f"], ["qh"], eps=0.1, lo=0, hi=200, rounding="half_up"),
        node("Quantise", "q_even", ["f"], ["qe"], eps=0.5, lo=-8, hi=7, rounding="round"),
        node("Add", "add_bcast", ["a", "b"], ["s1"]),
        node("Clip", "clip", ["s1"], ["c1"], lo=-20, hi=300),
        node(
            "RequantAdd",
            "radd",
            ["a", "qf"],
            ["r1"],
            lo=0,
            hi=255,
            in1_rq=True,
            in1_mul=3,
            in1_add=5,
            in1_div=4,
            in2_rq=True,
            in2_mul=-7,
            in2_add=0,
            in2_div=2,
            out_rq=True,
            out_mul=11,
            out_add=-9,
            out_div=8,
        ),
        node("Concat", "concat", ["a", "qh", "c1"], ["cat"], axis=1),
        node("Transpose", "transpose", ["cat"], ["tr"], perm=(0, 2, 3, 1)),
        node("Pad", "pad_const", ["tr"], ["p1"], pads=(0, 1, 0, 2, 0, 0, 1, 0), mode="constant", value=-5),
        node("Pad", "pad_edge", ["qe"], ["p2"], pads=(0, 0, 2, 1, 0, 0, 1, 3), mode="edge"),
        node("Pad", "pad_reflect", ["qe"], ["p3"], pads=(0, 0, 1, 2, 0, 0, 2, 1), mode="reflect"),
        node("Reshape", "reshape", ["p1"], ["rs"], shape=(0, -1)),
        node("Add", "add_const", ["pad_src", "r1"], ["s2"]),
    ]
    inputs = {
        "a": TensorInfo((1, 4, 5, 6), 8, True),
        "b": TensorInfo((1, 1, 5, 1), 8, False),
        "f": TensorInfo((1, 4, 5, 6), 32, True, is_float=True),
    }
    return make_graph("moves", inputs, nodes, c, ["rs", "p2", "p3", "r1", "s2"])


def products_graph():
    """Products off the ACL route: a batched MatMul of two activations with broadcasting, a Gemm with
    a transposed A and an activation as C; and a 3-D MatMul with constant weights, folded onto ACL."""
    r = np.random.default_rng(5)
    c = {
        "w5": r.integers(-128, 128, (4, 5)).astype(np.int8),
        "wq": r.integers(-128, 128, (4, 5)).astype(np.int8),
        "mq": r.integers(1, 99, 5).astype(np.int32),
        "aq": r.integers(-99, 99, 5).astype(np.int32),
    }
    nodes = [
        node("MatMul", "bmm", ["p", "q"], ["y1"]),
        node("Gemm", "gemm_ta", ["r", "w5", "c"], ["y2"], trans_a=True),
        node("MatMulRequant", "bmm_rq", ["p", "wq", "mq", "aq"], ["y3"], div=1 << 7, lo=-128, hi=127),
    ]
    inputs = {
        "p": TensorInfo((2, 3, 4), 8, True),
        "q": TensorInfo((1, 4, 5), 8, False),
        "r": TensorInfo((4, 3), 8, True),
        "c": TensorInfo((3, 5), 16, True),
    }
    return make_graph("products", inputs, nodes, c, ["y1", "y2", "y3"])


GRAPHS = {"convs": convs_graph, "edge": edge_graph, "moves": moves_graph, "products": products_graph}


@pytest.fixture(
    scope="module", params=[(name, backend) for name in sorted(GRAPHS) for backend in ("armcl", "cpu")], ids=lambda p: f"{p[0]}-{p[1]}"
)
def built(request, tmp_path_factory):
    name, backend = request.param
    return Built(GRAPHS[name](), tmp_path_factory.mktemp(name) / backend, backend=backend)


def test_every_route_is_taken():
    """The graphs above cover what they claim: each kernel route and both requantiser lane widths."""
    from qlspec.codegen.lower import lower

    kernels, lanes = {}, {}
    for make in GRAPHS.values():
        low = lower(make())
        kernels.update(low.kernels)
        lanes.update(low.lanes)
    assert kernels["conv_acl"] == kernels["gemm_acl"] == "acl-gemmlowp"
    assert kernels["conv_dw"] == "depthwise" and kernels["conv_grouped"] == kernels["conv_wide"] == "direct-conv"
    assert kernels["matmul_u8"] == "acl-gemmlowp"  # unsigned 8-bit weights (0..255) in int16 containers
    assert kernels["bmm"] == kernels["gemm_ta"] == "direct-gemm" and kernels["bmm_rq"] == "acl-gemmlowp"
    assert lanes["edge_32_s0"] == lanes["edge_32_s3"] == "int32" and lanes["rq_int64"] == "int64"
    assert lanes["edge_64_s0"] == lanes["edge_64_s3"] == lanes["planes_s0"] == lanes["planes_s3"] == lanes["edge_cols"] == "int64"
    assert set(kernels.values()) >= {
        "acl-gemmlowp",
        "depthwise",
        "direct-conv",
        "max-pool",
        "sum-pool",
        "requant",
        "copy",
        "add",
        "clip",
        "requant-add",
        "concat",
        "transpose",
        "pad",
        "quantise",
    }


def test_extreme_inputs(built):
    rng = np.random.default_rng(1)
    g = built.graph
    for extremes in (0.0, 0.5, 1.0):
        built.check({t: random_input(rng, g.tensors[t], extremes) for t in g.inputs})


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), extremes=st.sampled_from([0.0, 0.05, 0.5, 0.95]))
def test_generated_inputs(built, seed, extremes):
    rng = np.random.default_rng(seed)
    g = built.graph
    feeds = {t: random_input(rng, g.tensors[t], extremes) for t in g.inputs}
    if "f" in feeds:  # floats on and around the quantisers' grid points and halves, NaN-free
        grid = rng.integers(-300, 300, feeds["f"].shape) / 32
        feeds["f"] = np.where(rng.random(grid.shape) < 0.5, grid, feeds["f"] * 10).astype(np.float32)
    built.check(feeds)
