"""The tools a backend needs on this machine, and a clear message naming what is missing.

The ARM-CL backend cross-builds for aarch64 with Debian's g++-aarch64-linux-gnu and
libarm-compute-dev:arm64 (multiarch) and runs the result under qemu-aarch64 as a Cortex-A72
(DESIGN.md section 6). `scripts/install.sh` installs all of them.
"""

from __future__ import annotations

import platform
import shutil
from dataclasses import dataclass
from pathlib import Path

from qlspec.errors import BackendError

ACL_HEADER = Path("/usr/include/aarch64-linux-gnu/arm_compute/runtime/NEON/NEFunctions.h")
ACL_LIBRARY = Path("/usr/lib/aarch64-linux-gnu/libarm_compute.so")
APT = "dpkg --add-architecture arm64 && apt-get update && apt-get install -y cmake g++-aarch64-linux-gnu qemu-user libarm-compute-dev:arm64"


@dataclass(frozen=True)
class Toolchain:
    """Where each tool is; `emulator` is empty on an aarch64 machine (the binary runs natively)."""

    cmake: str
    cxx: str
    emulator: tuple[str, ...]
    native: bool

    def run_prefix(self, cpu: str = "cortex-a72") -> list[str]:
        """What goes before the binary: qemu with the board's CPU model (-L / so the arm64 multiarch
        libraries are found; the cross sysroot makes ACL hang at start-up), or nothing."""
        return [*self.emulator, "-cpu", cpu, "-L", "/"] if self.emulator else []


def missing_armcl() -> list[str]:
    """What the ARM-CL backend needs and this machine lacks (empty when everything is there)."""
    native = platform.machine() in ("aarch64", "arm64")
    need: dict[str, str | bool | None] = {"cmake": shutil.which("cmake")}
    if native:
        need["g++"] = shutil.which("g++")
    else:
        need["aarch64-linux-gnu-g++ (g++-aarch64-linux-gnu)"] = shutil.which("aarch64-linux-gnu-g++")
        need["qemu-aarch64 (qemu-user)"] = shutil.which("qemu-aarch64")
    need["ARM Compute Library headers (libarm-compute-dev:arm64)"] = ACL_HEADER.exists() or None
    need["ARM Compute Library (libarm-compute-dev:arm64)"] = ACL_LIBRARY.exists() or None
    return [name for name, found in need.items() if not found]


def armcl_toolchain() -> Toolchain:
    """The ARM-CL toolchain, or a BackendError naming every missing part and how to install it."""
    missing = missing_armcl()
    if missing:
        raise BackendError(f"the ARM-CL backend needs {', '.join(missing)}; install them with `bash scripts/install.sh` (as root: {APT})")
    native = platform.machine() in ("aarch64", "arm64")
    return Toolchain(
        cmake=shutil.which("cmake") or "cmake",
        cxx=shutil.which("g++" if native else "aarch64-linux-gnu-g++") or "",
        emulator=() if native else (shutil.which("qemu-aarch64") or "qemu-aarch64",),
        native=native,
    )


def toolchain_for(backend: str) -> Toolchain:
    """The toolchain of a generated backend: "armcl" (cross, emulated) or "cpu" (this machine's)."""
    return armcl_toolchain() if backend == "armcl" else host_toolchain()


def host_toolchain() -> Toolchain:
    """The portable (`cpu`) backend: this machine's own compiler, no emulator."""
    missing = [n for n in ("cmake", "g++") if not shutil.which(n)]
    if missing:
        raise BackendError(f"the cpu backend needs {', '.join(missing)}; install them with `bash scripts/install.sh`")
    return Toolchain(cmake=shutil.which("cmake") or "cmake", cxx=shutil.which("g++") or "g++", emulator=(), native=True)
