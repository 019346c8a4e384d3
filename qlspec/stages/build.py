"""Stage `build`: the optimised qlspec graph becomes a C++ project on ARM Compute Library 20.08,
cross-built for the Raspberry Pi 4 (aarch64, Cortex-A72).

Reads the convert stage's graph, and for the AI application the export's input quantiser and output
eps and the data stage's statistics and face model (`qlspec.codegen.app`). Outputs ``armcl/``: the
CMake project (`qlspec.codegen.project`: network.cpp, app.cpp, weights.bin, the runtime sources,
CMakeLists.txt, cmake/toolchain-aarch64.cmake; builds here across and on the board natively),
``armcl/bin/`` (qlspec-net, the network on .npy inputs, qlspec-app, photos in and landmarks out,
and weights.bin: the cross-built application; with ``target.output_stage: armcl-native`` its 8-bit products end in ACL's
own fixed-point requantisation, which is not the contract), ``armcl/lowering.json`` (the kernel and requantiser lanes of every node)
and ``build.json`` (toolchain, timings, counts). Without the toolchain the stage stops with one
line naming what is missing and how to install it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections import Counter

from qlspec import atomic
from qlspec.codegen.app import AppConstants
from qlspec.codegen.build import APP, BINARY, build_project
from qlspec.codegen.project import write_project
from qlspec.codegen.toolchain import toolchain_for
from qlspec.errors import BackendError
from qlspec.graph.io import load_graph
from qlspec.stages.engine import StageContext


def _version(cmd: str) -> str:
    try:
        return subprocess.run([cmd, "--version"], capture_output=True, text=True, timeout=30).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def run(ctx: StageContext) -> None:
    spec = ctx.spec
    backend = spec.target.backend
    tc = toolchain_for(backend)
    if backend == "armcl" and spec.target.cpu == "native" and not tc.native:
        raise BackendError(
            "target.cpu native builds for the machine it runs on, which is not aarch64 here; "
            "use cortex-a72 to cross-build for the Raspberry Pi 4"
        )
    graph = load_graph(ctx.inputs["convert"] / "graph")
    meta = json.loads((ctx.inputs["export"] / spec.export.flavour / "metadata.json").read_text())
    app = AppConstants.from_build(spec, meta["input"], meta["output"]["eps"], ctx.inputs["data"])
    folder = ctx.out / backend
    cpu = spec.target.cpu if backend == "armcl" else "native"
    t0 = time.perf_counter()
    low = write_project(graph, folder, backend=backend, cpu=cpu, output_stage=spec.target.output_stage, app=app)
    t1 = time.perf_counter()
    binary = build_project(folder, tc)
    t2 = time.perf_counter()
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    shutil.copy2(binary, bin_dir / BINARY)
    shutil.copy2(binary.parent / APP, bin_dir / APP)
    shutil.copy2(folder / "weights.bin", bin_dir / "weights.bin")
    shutil.rmtree(folder / "out")  # CMake's tree names this partial folder; rebuild from the project instead
    kernels, lanes = Counter(low.kernels.values()), Counter(low.lanes.values())
    atomic.write_json(
        ctx.out / "build.json",
        {
            "backend": backend,
            "output_stage": spec.target.output_stage,
            "cpu": cpu,
            "compiler": _version(tc.cxx),
            "cmake": _version(tc.cmake),
            "generate_s": round(t1 - t0, 2),
            "compile_s": round(t2 - t1, 2),
            "binary_bytes": (bin_dir / BINARY).stat().st_size,
            "weights_bytes": low.blob.size,
            "arena_bytes": low.plan.arena_bytes,
            "arena_naive_bytes": low.plan.naive_bytes,
            "kernels": dict(sorted(kernels.items())),
            "requant_lanes": dict(sorted(lanes.items())),
        },
    )
    ctx.log(f"  {len(graph.nodes)} nodes: " + ", ".join(f"{n} {k}" for k, n in sorted(kernels.items())))
    ctx.log(
        "  requantisers: "
        + ", ".join(f"{n} in {k} lanes" for k, n in sorted(lanes.items()))
        + f"; arena {low.plan.arena_bytes / 1024:.0f} KiB (without reuse {low.plan.naive_bytes / 1024:.0f} KiB); "
        f"compiled in {t2 - t1:.1f} s"
    )
