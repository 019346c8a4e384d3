"""The tiny application the end-to-end and deployment tests share: real stages, seconds not minutes.

`TINY` is its spec with ``EPOCHS`` for ``training.epochs``; `tiny_spec()` fills it in. The session
fixture `tiny_app` (tests/conftest.py) applies it once; `copy_tiny_app` gives each test module its
own copy of that build, so what one module does to its app never reaches another.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

TINY = """\
apiVersion: qlspec/v1
name: tiny
extends: [boards/rpi4.yaml, networks/3ddfa-mb05.yaml]
network: {width: 0.25}
data: {kind: synthetic, train: 96, val: 32, seed: 3}
training: {epochs: EPOCHS, batch_size: 32, threads: 2}
quantisation: {algorithm: pact, schedule: {epochs: 1, freeze_clip_at: null, lr: 0.001}}
verify: {samples: 16}
"""


def tiny_spec(epochs: int = 1, extra: str = "") -> str:
    """The tiny spec with `epochs` of float training and `extra` YAML lines appended."""
    return TINY.replace("EPOCHS", str(epochs)) + extra


def apply_tiny(root: Path) -> subprocess.CompletedProcess:
    """Write the tiny spec to root/app.yaml and apply it there (build/ beside it)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "app.yaml").write_text(tiny_spec())
    return subprocess.run([sys.executable, "-m", "qlspec", "apply", "app.yaml", "--no-progress"], capture_output=True, text=True, cwd=root)


def copy_tiny_app(built: Path, dest: Path) -> Path:
    """A copy of the applied tiny app in `built` (its app.yaml and build/) under `dest`; returns `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(built / "app.yaml", dest / "app.yaml")
    shutil.copytree(built / "build", dest / "build", symlinks=True)
    return dest
