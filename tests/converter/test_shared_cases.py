"""Every real QuantLib/Deeploy export parses, and the engine reproduces its outputs.npz and
activations.npz bit for bit, before and after optimisation and after a save/load round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from shared_exports import shared_cases

from qlspec.engine import run_graph
from qlspec.graph.io import load_graph, save_graph
from qlspec.graph.passes import optimise
from qlspec.modelio import read_inputs
from qlspec.onnx_import import import_onnx

CASES = shared_cases()


def _expected(case: Path) -> list[np.ndarray]:
    with np.load(case / "outputs.npz") as z:
        return [z[k] for k in z.files]


def _outputs_match(g, case: Path) -> None:
    got = run_graph(g, read_inputs(case / "inputs.npz", g))
    want = _expected(case)
    assert len(want) == len(g.outputs)
    for name, w in zip(g.outputs, want):
        assert got[name].shape == w.shape
        assert np.array_equal(got[name], w), f"{case.name}: output {name} differs"


@pytest.mark.parametrize("case", CASES)
def test_imported_graph_reproduces_outputs(case):
    _outputs_match(import_onnx(case / "network.onnx"), case)


@pytest.mark.parametrize("case", CASES)
def test_optimised_and_reloaded_graph_reproduces_outputs(case, tmp_path):
    g = optimise(import_onnx(case / "network.onnx"))
    _outputs_match(g, case)
    g2 = load_graph(save_graph(g, tmp_path / "graph"))
    assert g2 == g
    _outputs_match(g2, case)


def test_plain_floor_would_not_reproduce_them():
    """DESIGN section 4: the same rule with a plain floor (no div/2) does not match the exports."""
    case = next((c.values[0] for c in CASES if c.values[0] is not None and c.values[0].name == "Models_miniMobileNet"), None)
    if case is None:
        pytest.skip("Models_miniMobileNet not available")
    g = import_onnx(case / "network.onnx")
    plain_floor = {n.inputs[2]: g.constants[n.inputs[2]].astype(np.int64) - n.attr("div") // 2 for n in g.nodes if n.op == "RequantShift"}
    floor_g = g.rewrite(constants=plain_floor)
    got = run_graph(floor_g, read_inputs(case / "inputs.npz", g))[g.outputs[0]]
    assert not np.array_equal(got, _expected(case)[0])


# -- activations ------------------------------------------------------------------------------
# activations.npz keys are QuantLib module names, lower-cased with '.' -> '_'. They show up in the
# ONNX file as the node name (pytorch exports), as a suffix of it (".._ACT_PASS_1_RequantShift"),
# or as the prefix of the node's parameter initializers ("net._QL_..._PASS_0.mul"); where none of
# these is present (onnxruntime renamed the parameters), the key is the next layer in order.


def _norm(s: str) -> str:
    return s.lower().replace(".", "_")


def activation_tensors(model: onnx.ModelProto, keys: list[str]) -> dict[str, str]:
    nodes = [n for n in model.graph.node if n.op_type not in ("Constant", "Flatten", "Reshape")]
    inits = {i.name for i in model.graph.initializer}

    def by_name(n, k):
        name = _norm(n.name)
        core = name.removesuffix("_" + n.op_type.lower()).lstrip("_")
        return k == name or (len(core) >= 8 and k.endswith(core))

    def by_param(n, k):
        return any(_norm(t.rsplit(".", 1)[0]) == k for t in n.input if t in inits and "." in t)

    found: dict[str, int] = {}
    for k in keys:
        for rule in (by_name, by_param):
            hits = [i for i, n in enumerate(nodes) if rule(n, k) and i not in found.values()]
            if len(hits) == 1:
                found[k] = hits[0]
                break
    last = -1
    for k in keys:
        if k in found:
            last = found[k]
        else:
            nxt = next(i for i in range(last + 1, len(nodes)) if i not in found.values())
            found[k] = last = nxt
    return {k: nodes[i].output[0] for k, i in found.items()}


@pytest.mark.parametrize("case", CASES)
def test_intermediate_activations_match(case):
    path = case / "activations.npz"
    if not path.is_file():
        pytest.skip(f"{case.name} has no activations.npz")
    with np.load(path) as z:
        acts = {k: z[k] for k in z.files}
    if not acts:
        pytest.skip(f"{case.name} has no activations")
    model = onnx.load(case / "network.onnx")
    g = import_onnx(case / "network.onnx")
    got = run_graph(g, read_inputs(case / "inputs.npz", g), keep_intermediates=True)
    mapping = activation_tensors(model, list(acts))
    assert len(set(mapping.values())) == len(acts)
    for key, tensor in mapping.items():
        assert np.array_equal(got[tensor], acts[key]), f"{case.name}: activation {key} ({tensor}) differs"
