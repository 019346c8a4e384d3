"""Property: whatever graph F2T produces (both algorithms, 8/6/4 bits, per-layer and per-channel
weights, global and windowed pools, chains, residual adds and concatenations, D from 12 to 30), writing it in
either QuantLab flavour and importing the file gives the same graph back, computing bit for bit the
same outputs.

"The same graph": the same nodes in the same order, with the same names, ops, attributes and
activation wiring, and constants of equal value (constant *names* may differ: a flavour spells a
pool's requantiser with ``mul * k`` and DORY writes ``add + div/2``, which the importer undoes into
new constants). DORY splits a requantiser into Mul/Add/Div/Floor/Clip; its Clip is folded back by
the converter's own FoldClipIntoRequant pass before comparing.
"""

from __future__ import annotations

import numpy as np
import pytest
from export_toys import SIZE, fake_quantised, images
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from qlspec.engine import run_graph
from qlspec.engine.ops.requant_shift import reach
from qlspec.export import fake_to_true, write_flavour
from qlspec.graph.ir import Graph, TensorInfo
from qlspec.graph.passes import FoldClipIntoRequant, run_to_fixed_point
from qlspec.onnx_import import import_onnx

pytestmark = pytest.mark.usefixtures("one_thread")


def canonical(g: Graph) -> dict:
    """The graph as {node name: record}, tensors named by where they come from: graph inputs by
    position and type, node outputs by (producer's name, output index) and type, constants by value.
    Independent of node order (an importer may order independent branches differently)."""
    where: dict[str, tuple] = {t: ("input", i, g.info(t)) for i, t in enumerate(g.inputs)}
    for t, v in g.constants.items():
        where[t] = ("const", v.shape, tuple(v.ravel().astype(np.int64).tolist()))
    for n in g.nodes:
        for j, t in enumerate(n.outputs):
            where[t] = ("node", n.name, j, _reachable_info(g, n, t))
    nodes = {n.name: (n.op, _reachable_attrs(g, n), tuple(where[t] if t else None for t in n.inputs)) for n in g.nodes}
    return {"nodes": nodes, "outputs": tuple(where[t] for t in g.outputs), "names": tuple(g.outputs)}


def _reachable_info(g: Graph, n, t: str) -> TensorInfo:
    """A requantiser's output type from its reachable clip range (`_reachable_attrs`), as the importer
    infers it once DORY's narrower Clip is folded in (a 7-bit range where F2T declared 8 bits)."""
    if n.op != "RequantShift":
        return g.info(t)
    attrs = dict(_reachable_attrs(g, n))
    return TensorInfo.for_range(g.info(t).shape, attrs["lo"], attrs["hi"])


def _reachable_attrs(g: Graph, n) -> tuple:
    """A requantiser's clip range narrowed to what its input can reach (`reach`): a bound that no
    value touches changes nothing, and DORY's Clip, folded into the unclipped chain, gives the
    narrower one."""
    if n.op != "RequantShift":
        return n.attrs
    r = reach(g.info(n.inputs[0]), g.constants[n.inputs[1]], g.constants[n.inputs[2]], n.attr("div"))
    return tuple(sorted({**n.attr_dict, "lo": max(n.attr("lo"), -r), "hi": min(n.attr("hi"), r)}.items()))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    flavour=st.sampled_from(["deeploy", "dory"]),
    mode=st.sampled_from(["ptq", "qat"]),
    bits=st.sampled_from([8, 6, 4]),
    gran=st.sampled_from(["per-channel", "per-layer"]),
    pool=st.sampled_from(["global", "window"]),
    topology=st.sampled_from(["chain", "residual", "concat"]),
    requant_bits=st.integers(12, 30),
    seed=st.integers(0, 50),
)
@example(flavour="dory", mode="ptq", bits=8, gran="per-channel", pool="window", topology="concat", requant_bits=12, seed=1)  # a 7-bit reach
def test_export_then_import_gives_the_same_graph(tmp_path_factory, flavour, mode, bits, gran, pool, topology, requant_bits, seed):
    fq = fake_quantised(mode, bits, gran, pool, seed=seed, topology=topology)
    net = fake_to_true(fq, requant_bits=requant_bits, input_shape=(1, 3, SIZE, SIZE))
    x, _ = images(6, seed + 100)
    q, out = net.quantise_input(x), net.run(x)
    path = write_flavour(net, tmp_path_factory.mktemp(flavour), flavour, q, out)
    info = net.input_info
    back = import_onnx(path, input_types={"input": (info.bits, info.signed)})
    if flavour == "dory":
        back = run_to_fixed_point(back, (FoldClipIntoRequant(),))
    assert canonical(back) == canonical(net.integer_graph())
    assert np.array_equal(run_graph(back, {"input": q})["output"], out)


def test_the_comparison_sees_a_changed_constant():
    net = fake_to_true(fake_quantised("ptq", 8, "per-layer", "global"), requant_bits=20, input_shape=(1, 3, SIZE, SIZE))
    g = net.integer_graph()
    w = next(t for t in g.constants if t.endswith(".weight"))
    changed = g.rewrite(constants={w: (g.constants[w] + 1).astype(g.constants[w].dtype)})
    assert canonical(changed) != canonical(g)
    assert canonical(g.rewrite(rename={})) == canonical(g)
