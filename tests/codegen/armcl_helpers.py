"""Build a qlspec graph with the ARM-CL (or portable) generator and run it, for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qlspec.codegen.build import build_project, run_binary
from qlspec.codegen.project import write_project
from qlspec.codegen.toolchain import armcl_toolchain, host_toolchain
from qlspec.engine.run import run_graph
from qlspec.graph.ir import Graph, Node


def node(op: str, name: str, ins, outs, **attrs) -> Node:
    return Node.make(op, name, ins, outs, **attrs)


class Built:
    """A graph generated and compiled once; `run` feeds it inputs and returns its outputs by name."""

    def __init__(self, g: Graph, folder: Path, backend: str = "armcl") -> None:
        self.graph = g
        self.tc = armcl_toolchain() if backend == "armcl" else host_toolchain()
        self.lowered = write_project(g, folder, backend=backend)
        self.binary = build_project(folder, self.tc)

    def run(self, feeds: dict[str, np.ndarray], threads: int = 2) -> dict[str, np.ndarray]:
        arrays = [np.asarray(feeds[t], self.graph.tensors[t].dtype) for t in self.graph.inputs]
        r = run_binary(self.binary, arrays, self.tc, threads=threads)
        return {t: o for t, o in zip(self.graph.outputs, r.outputs)}

    def check(self, feeds: dict[str, np.ndarray]) -> None:
        """The binary's outputs equal the reference engine's exactly (values and shapes)."""
        got = self.run(feeds)
        want = run_graph(self.graph, {t: np.asarray(v, self.graph.tensors[t].dtype) for t, v in feeds.items()})
        for t in self.graph.outputs:
            assert got[t].shape == want[t].shape, (t, got[t].shape, want[t].shape)
            bad = got[t].astype(np.int64) != want[t].astype(np.int64)
            assert not bad.any(), f"{t}: {int(bad.sum())} of {bad.size} differ; first at {np.argwhere(bad)[0]}"


def random_input(rng: np.random.Generator, info, extremes: float = 0.1) -> np.ndarray:
    """Values across the tensor's whole range, a share of them at its two ends."""
    if info.is_float:
        return rng.normal(0, 1, info.shape).astype(np.float32)
    x = rng.integers(info.lo, info.hi, size=info.shape, endpoint=True, dtype=np.int64)
    ends = rng.random(info.shape) < extremes
    x[ends] = np.where(rng.random(int(ends.sum())) < 0.5, info.lo, info.hi)
    return x.astype(info.dtype)
