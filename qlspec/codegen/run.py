"""Generate, build and run a graph on a generated backend in one call (`qlspec infer --backend`)."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from qlspec.codegen.build import build_project, run_binary
from qlspec.codegen.project import write_project
from qlspec.codegen.toolchain import toolchain_for
from qlspec.engine.run import check_inputs
from qlspec.graph.ir import Graph


def run_generated(
    g: Graph, inputs: Mapping[str, np.ndarray], *, backend: str = "armcl", threads: int = 1, folder: Path | None = None
) -> dict[str, np.ndarray]:
    """`g`'s outputs by name, computed by the generated `backend` project (built in `folder`, or in
    a temporary folder), from inputs checked by the reference engine's rules. "armcl": ARM Compute
    Library, cross-built and run under qemu (natively on aarch64); "cpu": the same kernels without
    ACL, built and run natively."""
    feeds = check_inputs(g, inputs)
    tc = toolchain_for(backend)
    with tempfile.TemporaryDirectory(prefix="qlspec-infer-") as tmp:
        project = Path(folder) if folder is not None else Path(tmp) / backend
        write_project(g, project, backend=backend)
        binary = build_project(project, tc)
        result = run_binary(binary, [feeds[t] for t in g.inputs], tc, threads=threads)
    return dict(zip(g.outputs, result.outputs))
