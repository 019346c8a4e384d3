"""C kernels shipped as source inside qlspec, built on first use with the machine's C compiler.

A kernel is one C file beside the module that uses it (e.g. `qlspec/quant/pact_kernel.c`). `load`
compiles it once into a shared library in the cache folder and opens it with ctypes; later processes
open the cached file. Where that is impossible (no compiler, a compiler that fails, a folder that
cannot be written, ``QLSPEC_NATIVE=0``) `load` returns None and says why in `unavailable`, and the
caller computes the same thing with torch: a kernel only ever makes something faster.

- **Compiler**: ``$CC``, else ``cc`` (`scripts/install.sh` installs g++, and gcc with it). Flags:
  ``-O3 -march=native`` for this CPU's vector units, ``-fopenmp`` for threads, and two that keep
  IEEE arithmetic exact: ``-ffp-contract=off`` (no fused multiply-add) and nothing of
  ``-ffast-math``; ``-fno-trapping-math`` only lets floor and round vectorise.
- **Threads**: the library links ``libgomp.so.1``, the name of the OpenMP runtime torch's CPU wheel
  loads, so (torch imported first) the kernel's threads are torch's own pool, not a second one
  spinning on the same cores.
- **Cache**: ``$QLSPEC_CACHE_DIR``, else ``$XDG_CACHE_HOME/qlspec``, else ``~/.cache/qlspec``; the
  file name holds a hash of the source, the flags, the compiler's version and this CPU's feature
  flags, so an edit, another compiler or another machine sharing the folder gets its own build. The
  library is written atomically (`qlspec.atomic`), so processes building at once never see half a
  file; one that cannot be opened is rebuilt once. Where the cache cannot be written (a read-only
  home, a full disk) the library is built in a per-user folder under the temporary folder.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from qlspec import atomic
from qlspec.errors import first_line

FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-trapping-math", "-fopenmp", "-fPIC", "-shared")
COMPILE_TIMEOUT_S = 120

#: Why a kernel is not in use, by source file name (filled by `load`).
unavailable: dict[str, str] = {}


def enabled() -> bool:
    """False when ``QLSPEC_NATIVE`` is ``0``, ``off``, ``false`` or ``no``."""
    return os.environ.get("QLSPEC_NATIVE", "1").strip().lower() not in ("0", "off", "false", "no")


def cache_dir() -> Path:
    """Where built kernels are kept (see the module docstring)."""
    if os.environ.get("QLSPEC_CACHE_DIR"):
        return Path(os.environ["QLSPEC_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    try:
        return (Path(xdg) if xdg else Path.home() / ".cache") / "qlspec"
    except RuntimeError:  # no home folder (a bare container user)
        return _spare_dir()


def _spare_dir() -> Path:
    """A per-user folder under the system's temporary folder, for when the cache cannot be written."""
    return Path(tempfile.gettempdir()) / f"qlspec-cache-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


def load(source: Path) -> ctypes.CDLL | None:
    """The library built from `source` (cached per process), or None with the reason in `unavailable`."""
    return _load(Path(source).resolve(), enabled(), os.environ.get("CC") or "cc", str(cache_dir()))


class _CompileError(OSError):
    """The compiler refused the source (another folder would not help)."""


@functools.cache
def _load(source: Path, on: bool, cc: str, folder: str) -> ctypes.CDLL | None:
    name = source.name
    if not on:
        unavailable[name] = "QLSPEC_NATIVE is off"
        return None
    compiler = shutil.which(cc)
    if compiler is None:
        unavailable[name] = f"no C compiler: {cc!r} is not on PATH (set CC)"
        return None
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
        key = hashlib.sha256("\0".join([source.read_text(), compiler, version, *FLAGS, platform.machine(), _cpu_flags()]).encode())
        file_name = f"{source.stem}-{key.hexdigest()[:16]}.so"
        try:
            opened = _open(compiler, source, Path(folder) / file_name)
        except _CompileError:
            raise
        except OSError:  # the cache folder cannot be written (read-only home, full disk): a spare one
            opened = _open(compiler, source, _spare_dir() / file_name)
        unavailable.pop(name, None)
        return opened
    except (OSError, subprocess.SubprocessError) as exc:
        unavailable[name] = first_line(str(exc) or type(exc).__name__)
    return None


def _open(compiler: str, source: Path, lib: Path) -> ctypes.CDLL:
    """`lib`, built first where it is missing or cannot be opened (cut short, or foreign)."""
    if lib.exists():
        try:
            return ctypes.CDLL(str(lib))
        except OSError:
            lib.unlink(missing_ok=True)
    _build(compiler, source, lib)
    return ctypes.CDLL(str(lib))


def _build(compiler: str, source: Path, lib: Path) -> None:
    """Compile `source` into `lib` (through a temporary folder, then one atomic write)."""
    lib.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="qlspec-native-") as tmp:
        out = Path(tmp) / lib.name
        done = subprocess.run([compiler, *FLAGS, "-o", str(out), str(source)], capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
        if done.returncode != 0:
            raise _CompileError(
                f"{Path(compiler).name} failed on {source.name}: {first_line(done.stderr or f'exit status {done.returncode}')}"
            )
        atomic.write_bytes(lib, out.read_bytes())


def _cpu_flags() -> str:
    """The CPU's feature flags (``/proc/cpuinfo``), or the platform's name where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.split(":")[0].strip() in ("flags", "Features"):
                    return line
    except OSError:
        pass
    return platform.processor() or sys.platform
