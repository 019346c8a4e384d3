"""Real full disks and read-only folders for tests: a bash script run in a private mount namespace
(`unshare -m` as root, `unshare -rm` otherwise), where it can mount small or read-only tmpfs
filesystems that vanish with it. Nothing is simulated and the machine's own mounts are untouched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_private(script: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run bash `script` in a private mount namespace; `$QLSPEC` runs the qlspec CLI of this Python."""
    unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]
    env = {**os.environ, "QLSPEC": f"{sys.executable} -m qlspec"}
    return subprocess.run([*unshare, "bash", "-c", "set -u\n" + script], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)
