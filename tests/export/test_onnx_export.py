"""Both QuantLab ONNX flavours: structure, onnx.checker, the reference engine bit-exact against TQ,
onnxruntime (DORY) with a mismatch count, the side files, and MobileNetV1 end to end."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from export_toys import CASES, RESIDUAL_CASES, SIZE, fake_quantised, float32_magnitude, images, layerwise_diffs, output_gap_and_bound
from onnx import AttributeProto, helper, numpy_helper

from qlspec import __version__
from qlspec.export import deeploy, dory, fake_to_true, run_engine, run_onnxruntime, to_onnx, write_flavour

D = 24
SMALL_D = 10  # every x*mul + add of the toys stays below 2^24 (checked by each test that relies on it)


pytestmark = pytest.mark.usefixtures("one_thread")


_CACHE: dict = {}


def integerised(mode="ptq", bits=8, gran="per-channel", pool="global"):
    key = (mode, bits, gran, pool)
    if key not in _CACHE:
        fq = fake_quantised(mode, bits, gran, pool)
        _CACHE[key] = fake_to_true(fq, requant_bits=D, input_shape=(1, 3, SIZE, SIZE))
    return _CACHE[key]


def vectors(net, n=16, seed=21):
    x, _ = images(n, seed)
    return net.quantise_input(x), net.run(x)


def attr(node, name):
    (a,) = [a for a in node.attribute if a.name == name]
    return a


def inits(model):
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


# -- the engine on both flavours -------------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["deeploy", "dory"])
@pytest.mark.parametrize("mode,bits,gran,pool", CASES)
def test_engine_runs_the_export_bit_exact_against_tq(tmp_path, flavour, mode, bits, gran, pool):
    net = integerised(mode, bits, gran, pool)
    q, out = vectors(net)
    path = write_flavour(net, tmp_path / flavour, flavour, q, out, spec_hash="h")
    assert np.array_equal(run_engine(path, q), out)
    assert np.array_equal(run_engine(path, q, optimised=True), out)


# -- Deeploy structure ------------------------------------------------------------------------------


def test_deeploy_structure_as_quantlib_writes_it():
    net = integerised()
    m = deeploy.to_onnx(net.integer_graph())
    g = m.graph
    assert [n.op_type for n in g.node] == ["Conv", "RequantShift"] * 5 + ["GlobalAveragePool", "RequantShift", "Flatten", "Gemm"]
    assert {(o.domain, o.version) for o in m.opset_import} == {("", 10), ("PACTOps", 1)}
    assert m.ir_version == 5
    assert [i.name for i in g.input] == ["input"] and [o.name for o in g.output] == ["output"]
    assert g.output[0].type.tensor_type.shape.dim[1].dim_value == 5
    consts = inits(m)
    requant = {i for n in g.node if n.op_type == "RequantShift" for i in n.input[1:]}
    assert all(v.dtype == np.float32 and np.array_equal(v, np.round(v)) for k, v in consts.items() if k not in requant)
    for n in g.node:  # INT32 as Deeploy's own files, unless D = 24 pushed mul or add beyond int32
        if n.op_type == "RequantShift":
            fits = all(np.abs(consts[k].astype(np.float64)).max() < 2**31 for k in n.input[1:])
            assert {consts[k].dtype for k in n.input[1:]} == {np.dtype(np.int32 if fits else np.float32)}
    for n in g.node:
        if n.op_type == "RequantShift":
            assert n.domain == "PACTOps" and len(n.input) == 3
            assert sorted(a.name for a in n.attribute) == ["div", "n_levels_out", "signed"]
            assert all(a.type == AttributeProto.TENSOR for a in n.attribute)
            assert list(attr(n, "div").t.dims) == [] and numpy_helper.to_array(attr(n, "div").t) == 2.0**D
            assert numpy_helper.to_array(attr(n, "n_levels_out").t).tolist() == [256.0]
            assert numpy_helper.to_array(attr(n, "signed").t).tolist() == [0.0]
        if n.op_type == "Conv":
            assert len(n.input) == 2  # intermediate biases live in the requantiser
    convs = [n for n in g.node if n.op_type == "Conv"]
    assert helper.get_attribute_value(attr(convs[1], "group")) == 4  # depthwise
    gemm = g.node[-1]
    assert helper.get_attribute_value(attr(gemm, "transB")) == 1 and len(gemm.input) == 3
    # per-channel mul/add are (C,1,1); the requantiser after the 4x4 pool has mul = 16 * the sum's mul
    ir = net.graph
    rqs = [n for n in ir.nodes if n.op == "RequantShift"]
    first = next(n for n in g.node if n.op_type == "RequantShift")
    assert consts[first.input[1]].shape == (4, 1, 1)
    assert np.array_equal(consts[first.input[2]], ir.constants[rqs[0].inputs[2]])  # the IR's add: Deeploy adds div/2 too
    pool_rq = [n for n in g.node if n.op_type == "RequantShift"][-1]
    assert consts[pool_rq.input[1]] == 16 * ir.constants[rqs[-1].inputs[1]]


def test_deeploy_passes_onnx_checker_and_default_domain_spelling_does_not():
    m = deeploy.to_onnx(integerised().integer_graph())
    onnx.checker.check_model(m, full_check=True)
    legacy = deeploy.to_onnx(integerised().integer_graph(), node_domain="")
    assert all(n.domain == "" for n in legacy.graph.node)
    with pytest.raises(onnx.checker.ValidationError, match="RequantShift"):
        onnx.checker.check_model(legacy)


def test_deeploy_default_domain_spelling_runs_in_the_engine(tmp_path):
    net = integerised()
    q, out = vectors(net, 4)
    path = tmp_path / "legacy.onnx"
    onnx.save_model(deeploy.to_onnx(net.integer_graph(), node_domain=""), str(path))
    assert np.array_equal(run_engine(path, q), out)


# -- DORY structure ---------------------------------------------------------------------------------


def test_dory_structure_and_annotations():
    net = integerised("qat", 4, "per-layer", "global")
    m = dory.to_onnx(net.integer_graph())
    g = m.graph
    chain = ["Mul", "Add", "Constant", "Div", "Floor", "Clip"]
    assert [n.op_type for n in g.node] == (["Conv", *chain] * 5 + ["GlobalAveragePool", *chain, "Flatten", "Gemm"])
    assert {(o.domain, o.version) for o in m.opset_import} == {("", 10)}
    ints = lambda n: {a.name: a.i for a in n.attribute if a.type == AttributeProto.INT}  # noqa: E731
    for n in g.node:
        if n.op_type in ("Conv", "Gemm"):
            assert ints(n)["weight_bits"] == 4 and ints(n)["bias_bits"] == 32
        elif n.op_type == "Mul":
            assert ints(n) == {"mult_bits": 32}
        elif n.op_type == "Add":
            assert ints(n) == {"add_bits": 32}
        elif n.op_type == "Clip":
            assert ints(n) == {"out_bits": 4}
            assert (attr(n, "min").f, attr(n, "max").f) == (0.0, 15.0)
        elif n.op_type == "Constant":
            assert numpy_helper.to_array(attr(n, "value").t) == 2.0**D
    consts = inits(m)
    rq0 = next(n for n in net.graph.nodes if n.op == "RequantShift")
    add0 = next(n for n in g.node if n.op_type == "Add")
    half = 2 ** (D - 1)
    assert np.array_equal(consts[add0.input[1]], net.graph.constants[rq0.inputs[2]] + half)  # DORY has no implicit half


def test_dory_annotated_file_fails_checker_and_stripped_graph_passes():
    m = dory.to_onnx(integerised().integer_graph())
    with pytest.raises(onnx.checker.ValidationError, match="Unrecognized attribute"):
        onnx.checker.check_model(m)
    onnx.checker.check_model(dory.strip_annotations(m), full_check=True)


@pytest.mark.parametrize(
    "mode,bits,gran,pool,topology", [(*c, "chain") for c in CASES] + [(*c, t) for c in RESIDUAL_CASES[::3] for t in ("residual", "concat")]
)
def test_dory_in_onnxruntime_is_exact_where_float32_is(mode, bits, gran, pool, topology):
    """onnxruntime evaluates the DORY spelling in float32: exact while every value stays below 2^24.

    At D = 24 the products x*mul do not (float32 rounds them and a value a hair from a level may
    flip, depending on the CPU), so the claim is tested where it is a theorem: at a small D, with the
    magnitude bound checked first."""
    net = fake_to_true(fake_quantised(mode, bits, gran, pool, topology=topology), requant_bits=SMALL_D, input_shape=(1, 3, SIZE, SIZE))
    q, out = vectors(net, 32)
    assert float32_magnitude(net, q) < 2**24
    got = run_onnxruntime(to_onnx(net, "dory"), q)
    assert np.array_equal(got, out)


# -- side files -------------------------------------------------------------------------------------


def test_side_files_layout(tmp_path):
    net = integerised()
    q, out = vectors(net, 3)
    write_flavour(net, tmp_path / "deeploy", "deeploy", q, out, spec_hash="abc123")
    write_flavour(net, tmp_path / "dory", "dory", q, out, spec_hash="abc123")
    for flavour in ("deeploy", "dory"):
        folder = tmp_path / flavour
        i, o = np.load(folder / "inputs.npz"), np.load(folder / "outputs.npz")
        assert i.files == ["input"] and i["input"].dtype == np.int64 and i["input"].shape == (3, 3, SIZE, SIZE)
        assert o.files == ["output"] and o["output"].dtype == np.int64 and np.array_equal(o["output"], out)
        meta = json.loads((folder / "metadata.json").read_text())
        assert meta["flavour"] == flavour and meta["spec_hash"] == "abc123" and meta["qlspec_version"] == __version__
        assert meta["requant_bits"] == D and meta["input"]["eps"] == 1 / 128 and meta["input"]["bits"] == 8
        assert meta["input"]["signed"] is True and meta["input"]["rounding"] == "floor"
        assert len(meta["output"]["eps"]) == 5
        model = onnx.load(str(folder / "network.onnx"))
        names = {i.name for i in model.graph.input} | {o.name for o in model.graph.output} | {v.name for v in model.graph.value_info}
        assert set(meta["tensors"]) == names
    config = json.loads((tmp_path / "dory" / "config_network.json").read_text())
    assert config["input_bits"] == 8 and config["input_signed"] is True and config["input_eps"] == 1 / 128
    assert config["onnx_file"] == "network.onnx" and config["BNRelu_bits"] == 32


# -- MobileNetV1 end to end -------------------------------------------------------------------------


def test_mobilenet_v1_quarter_width_end_to_end(tmp_path):
    from qlspec.nets.mobilenet_v1 import MobileNetV1
    from qlspec.preprocess import DEFAULT as preprocess
    from qlspec.quant import QuantConfig, calibrate, float_to_fake

    torch.manual_seed(0)
    net = MobileNetV1(0.25)
    pixels = torch.randint(0, 256, (6, 120, 120, 3), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    x = preprocess(pixels)
    net.train()
    with torch.no_grad():
        net(x)  # BN statistics of these images
    net.eval()
    fq = float_to_fake(net, QuantConfig(fold_bn=True), x[:2])
    calibrate(fq, [x], method="percentile")
    net = fake_to_true(fq, requant_bits=D, input_shape=(1, 3, 120, 120))
    assert net.graph.op_counts()["Conv"] == 27 and net.graph.info("output").shape == (1, 62)
    q = torch.from_numpy(net.quantise_input(x))
    assert torch.equal(q, pixels.permute(0, 3, 1, 2).long() - 128)
    out = net.run(x)
    for source, d in layerwise_diffs(fq, net, x[:2]).items():
        assert int(np.abs(d).max()) <= 1, source
    # end to end, 27 layers of flips add up; what they can move the output by is derived, not counted
    fine = fake_to_true(fq, requant_bits=30, input_shape=(1, 3, 120, 120))
    gap, bound, _ = output_gap_and_bound(fq, fine, x)
    assert np.all(np.abs(gap) <= bound)
    for flavour in ("deeploy", "dory"):
        path = write_flavour(net, tmp_path / flavour, flavour, q[:2].numpy(), out[:2])
        assert np.array_equal(run_engine(path, q[:2].numpy()), out[:2])
    small = fake_to_true(fq, requant_bits=SMALL_D, input_shape=(1, 3, 120, 120))
    assert float32_magnitude(small, q.numpy()) < 2**24
    got = run_onnxruntime(to_onnx(small, "dory"), q.numpy())
    assert np.array_equal(got, small.run(x))
