"""Specs as they were in git: `qlspec diff --against REV` and the git diff driver `qlspec diff --git`.

`at_revision` lays out the spec's git repository as it was at REV (its tracked files, from `git
archive`) in a temporary folder, so `extends` and relative paths resolve as they did then.
`from_git_driver` reads the arguments git passes an external diff command
(``path old-file old-hex old-mode new-file new-hex new-mode``): git's temporary copies live outside
the repository, so each side is written beside `path` under a hidden name while it is loaded, and
its `extends` resolve against the working tree (the closest a driver can get).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from qlspec.errors import QlspecError
from qlspec.spec.load import LoadedSpec, load_spec

NULL = "/dev/null"


def _git(args: list[str], cwd: Path, what: str) -> bytes:
    try:
        r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=120)
    except FileNotFoundError:
        raise QlspecError("git is not installed", where=what) from None
    if r.returncode != 0:
        raise QlspecError(
            r.stderr.decode(errors="replace").strip().splitlines()[-1][:200] if r.stderr.strip() else "git failed", where=what
        )
    return r.stdout


@contextlib.contextmanager
def at_revision(spec: Path, rev: str) -> Iterator[Path]:
    """The path of `spec` inside a temporary copy of its repository's tracked files at `rev`."""
    if rev.startswith("-"):
        raise QlspecError(f"not a revision: {rev!r}", where="--against")
    folder = spec.resolve().parent
    top = Path(_git(["rev-parse", "--show-toplevel"], folder, str(spec)).decode().strip())
    archive = _git(["archive", "--format=tar", rev], top, f"--against {rev}")
    with tempfile.TemporaryDirectory(prefix="qlspec-rev-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        (Path(tmp) / ".git").mkdir()  # the copy's own repository root, for extends' confinement
        old = Path(tmp) / spec.resolve().relative_to(top)
        if not old.is_file():
            raise QlspecError(f"{spec} does not exist at {rev}", where=f"--against {rev}")
        yield old


def _load_beside(path: Path, content_file: str, label: str) -> LoadedSpec | None:
    """`content_file` (git's copy of one side) loaded as if it were at `path`; None for /dev/null."""
    if content_file == NULL:
        return None
    data = Path(content_file).read_bytes()
    fd, name = tempfile.mkstemp(prefix=f".qlspec-{label}-", suffix=path.suffix, dir=path.resolve().parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return load_spec(Path(name))
    finally:
        os.unlink(name)


def from_git_driver(args: list[str]) -> tuple[str, LoadedSpec | None, LoadedSpec | None]:
    """(path, old, new) from git's seven external-diff arguments."""
    if len(args) != 7:
        raise QlspecError(f"--git takes the 7 arguments git passes a diff driver (got {len(args)})", where="qlspec diff --git")
    path, old_file, new_file = Path(args[0]), args[1], args[4]
    return args[0], _load_beside(path, old_file, "old"), _load_beside(path, new_file, "new")
