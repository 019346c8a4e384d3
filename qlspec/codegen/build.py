"""Build a generated project with CMake and run the binary (under qemu when it is for aarch64)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qlspec.codegen.toolchain import Toolchain
from qlspec.errors import BackendError

BINARY = "qlspec-net"
APP = "qlspec-app"


def _first_error(text: str) -> str:
    """The first line a compiler, CMake or the runner flagged as an error (else the last line)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    flagged = [line for line in lines if "error" in line.lower()]
    return (flagged or lines or ["no output"])[0][:300]


def build_project(folder: Path, tc: Toolchain, *, jobs: int | None = None, timeout: float = 1800) -> Path:
    """Configure and build `folder` into folder/out; returns the binary. The full log is build.log."""
    folder = Path(folder).resolve()
    out = folder / "out"
    configure = [tc.cmake, "-S", str(folder), "-B", str(out), "-DCMAKE_BUILD_TYPE=Release"]
    if not tc.native:
        configure.append(f"-DCMAKE_TOOLCHAIN_FILE={folder / 'cmake' / 'toolchain-aarch64.cmake'}")
    log = []
    for cmd in (configure, [tc.cmake, "--build", str(out), "-j", str(jobs or os.cpu_count() or 1)]):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BackendError(f"`{' '.join(cmd[:2])}` took more than {timeout:.0f} s", where=str(folder)) from None
        log.append(f"$ {' '.join(cmd)}\n{r.stdout}{r.stderr}")
        (folder / "build.log").write_text("\n".join(log))
        if r.returncode != 0:
            raise BackendError(
                f"build failed (exit {r.returncode}): {_first_error(r.stdout + r.stderr)} (full log: {folder / 'build.log'})",
                where=str(folder),
            )
    return out / BINARY


@dataclass(frozen=True)
class RunResult:
    outputs: list[np.ndarray]
    median_ms: float  # per batch, over the timed passes
    wall_s: float
    node_ms: list[dict] | None = None  # with profile: per node in run order, {"kernel", "ms_per_batch"}


def _execute(
    program: Path, arguments: list[str], tc: Toolchain, *, threads: int, repeat: int, cpu: str, out: str, timeout: float, what: str
) -> float:
    """Run a generated runner (under qemu when cross-built) with the options every runner takes;
    returns the wall time; a failure or time-out is a BackendError naming `what` ran."""
    cmd = [
        *tc.run_prefix(cpu),
        str(program),
        "--weights",
        str(program.parent / "weights.bin"),
        "--threads",
        str(threads),
        "--repeat",
        str(repeat),
        "--out",
        out,
        *arguments,
    ]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BackendError(f"{what} took more than {timeout:.0f} s", where=str(program)) from None
    if r.returncode != 0:
        raise BackendError(f"{what} failed (exit {r.returncode}): {_first_error(r.stderr or r.stdout)}", where=str(program))
    return time.perf_counter() - t0


def run_binary(
    binary: Path,
    inputs: list[np.ndarray],
    tc: Toolchain,
    *,
    threads: int = 1,
    repeat: int = 0,
    cpu: str = "cortex-a72",
    timeout: float = 3600,
    profile: bool = False,
) -> RunResult:
    """Run the network on `inputs` (one array per graph input, samples stacked on axis 0)."""
    with tempfile.TemporaryDirectory(prefix="qlspec-run-") as tmp:
        files = []
        for k, a in enumerate(inputs):
            files.append(os.path.join(tmp, f"input_{k}.npy"))
            np.save(files[-1], np.ascontiguousarray(a))
        wall = _execute(
            binary,
            [*(["--profile"] if profile else []), *files],
            tc,
            threads=threads,
            repeat=repeat,
            cpu=cpu,
            out=tmp,
            timeout=timeout,
            what="the network",
        )
        outs = []
        k = 0
        while os.path.exists(os.path.join(tmp, f"output_{k}.npy")):
            outs.append(np.load(os.path.join(tmp, f"output_{k}.npy")))
            k += 1
        timing = json.loads(Path(tmp, "timing.json").read_text())
    return RunResult(outs, float(timing["median_ms_per_batch"]), wall, timing.get("nodes"))


@dataclass(frozen=True)
class AppResult:
    codes: np.ndarray  # the network input codes the app computed, (N, 3, S, S)
    outputs: np.ndarray  # its raw integer outputs, (N, P) int64
    landmarks_json: dict  # landmarks.json as written by the app
    timing: dict  # timing.json: median milliseconds per photo of each step
    wall_s: float


def run_app(
    app: Path, arguments: list[str], tc: Toolchain, *, threads: int = 1, repeat: int = 0, cpu: str = "cortex-a72", timeout: float = 3600
) -> AppResult:
    """Run the AI application (qlspec-app) on photos: `arguments` are its --roi options and photo paths."""
    with tempfile.TemporaryDirectory(prefix="qlspec-app-") as tmp:
        wall = _execute(app, arguments, tc, threads=threads, repeat=repeat, cpu=cpu, out=tmp, timeout=timeout, what="the app")
        out = Path(tmp)
        return AppResult(
            np.load(out / "input_0.npy"),
            np.load(out / "output_0.npy"),
            json.loads((out / "landmarks.json").read_text()),
            json.loads((out / "timing.json").read_text()),
            wall,
        )
