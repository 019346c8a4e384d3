"""Every real QuantLab/Deeploy export builds as an ARM-CL project and reproduces its outputs.npz
bit for bit under qemu-aarch64 as a Cortex-A72 (slow: a cross-build per case)."""

from __future__ import annotations

import numpy as np
import pytest
from armcl_helpers import Built
from shared_exports import shared_cases

from qlspec.graph.passes import optimise
from qlspec.modelio import load_model

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("case", shared_cases())
def test_export_runs_bit_exact_under_qemu(case, tmp_path):
    g = optimise(load_model(case / "network.onnx"))
    built = Built(g, tmp_path / "armcl")
    ins, outs = np.load(case / "inputs.npz"), np.load(case / "outputs.npz")
    feeds = dict(zip(g.inputs, (ins[k] for k in ins.files)))
    got = built.run(feeds)
    for t, key in zip(g.outputs, outs.files):
        want = outs[key]
        assert got[t].reshape(want.shape).astype(np.int64).tolist() == want.astype(np.int64).tolist()
