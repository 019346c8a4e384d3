"""One writer per build folder: an advisory lock held while `apply` or `compare` runs.

``build/<name>/.lock`` is locked with ``flock`` (released by the kernel when the holder exits, even
when it is killed) and holds who took it: pid, host, time and command. A second run on the same
folder does not wait silently and never shares a partial folder: it stops at once with one located
line saying who holds the lock. `plan`, `diff` and `validate` only read and take no lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from qlspec.errors import StageError

LOCK_NAME = ".lock"


@contextmanager
def build_lock(build_dir: Path) -> Iterator[None]:
    """Hold the build folder's lock for the duration; raise `StageError` naming the holder if taken."""
    build_dir.mkdir(parents=True, exist_ok=True)
    path = build_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StageError(
                f"the build folder is in use by {_holder(path)}; wait for it to finish or stop it", where=str(build_dir)
            ) from None
        os.ftruncate(fd, 0)
        os.write(
            fd,
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "command": " ".join(sys.argv[:4])[:200],
                }
            ).encode(),
        )
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _holder(path: Path, patience: float = 2.0) -> str:
    """Who holds the lock, as the holder wrote it; a holder that has just taken it gets `patience` seconds to say so."""
    deadline = time.monotonic() + patience
    while True:
        try:
            info = json.loads(path.read_text() or "{}")
            return f"pid {info['pid']} on {info['host']} since {info['since']} ({info['command']!r})"
        except (OSError, ValueError, KeyError, TypeError):
            if time.monotonic() >= deadline:
                return "another qlspec process"
            time.sleep(0.02)
