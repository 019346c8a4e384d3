"""One writer per build folder: a second apply stops with the holder's name; a killed holder frees it."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from fuzzing import examples

from qlspec.errors import StageError
from qlspec.stages.lock import build_lock

SPEC = """\
apiVersion: qlspec/v1
name: locked
extends: [networks/3ddfa-mb05.yaml]
network: {width: 0.25}
data: {kind: synthetic, train: 64, val: 16, seed: 1}
training: {epochs: 1, batch_size: 32, threads: 1}
verify: {samples: 16}
"""


def qlspec(*args, cwd):
    return subprocess.Popen(
        [sys.executable, "-m", "qlspec", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd
    )


def test_a_second_holder_is_refused_and_named(tmp_path):
    with build_lock(tmp_path):
        with pytest.raises(StageError, match=r"in use by pid \d+ on "):
            with build_lock(tmp_path):
                pass
    with build_lock(tmp_path):  # released on exit
        pass


def test_a_holder_that_has_not_yet_written_its_name_is_still_named(tmp_path):
    """The holder takes the lock, then writes who it is: a second run arriving in between waits for the name."""
    import fcntl
    import os
    import threading

    fd = os.open(tmp_path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    late = threading.Timer(0.3, lambda: os.write(fd, b'{"pid": 4242, "host": "h", "since": "t", "command": "c"}'))
    late.start()
    try:
        with pytest.raises(StageError, match=r"in use by pid 4242 on h"):
            with build_lock(tmp_path):
                pass
    finally:
        late.join()
        os.close(fd)


def test_a_killed_holder_releases_the_lock(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from qlspec.stages.lock import build_lock\n"
            "with build_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(StageError):
        with build_lock(tmp_path):
            pass
    holder.kill()
    holder.wait()
    with build_lock(tmp_path):
        pass


def test_concurrent_applies_end_with_one_consistent_build(tmp_path):
    (tmp_path / "app.yaml").write_text(SPEC)
    for _trial in range(examples(3)):  # QLSPEC_FUZZ=10: 30 trials
        runs = [qlspec("apply", "app.yaml", "--until", "data", "--no-progress", "--force", "data", cwd=tmp_path) for _ in range(2)]
        results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in runs]
        assert all(rc == 0 or (rc == 2 and "in use by pid" in err) for rc, _, err in results), results
        assert any(rc == 0 for rc, _, _ in results)
        plan = subprocess.run(
            [sys.executable, "-m", "qlspec", "plan", "app.yaml", "--until", "data"], capture_output=True, text=True, cwd=tmp_path
        )
        assert "data      up to date" in plan.stdout, plan.stdout + plan.stderr
    busy = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from pathlib import Path; from qlspec.stages.lock import build_lock\n"
            "with build_lock(Path('build/locked')):\n    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert busy.stdout.readline().strip() == "held"
    second = qlspec("apply", "app.yaml", "--until", "data", "--no-progress", cwd=tmp_path)
    rc, err = second.wait(timeout=60), second.stderr.read()
    busy.kill()
    busy.wait()
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "build/locked" in err and "in use by pid" in err
    started = time.perf_counter()
    assert qlspec("apply", "app.yaml", "--until", "data", "--no-progress", cwd=tmp_path).wait(timeout=120) == 0
    assert time.perf_counter() - started < 120
