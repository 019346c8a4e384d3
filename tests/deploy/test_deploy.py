"""`qlspec apply` / `qlspec deploy` against a real OpenSSH server on 127.0.0.1 as the board.

The session's tiny application (tests/tiny_app.py, built once for these and the end-to-end tests)
is deployed to a loopback board (tests/loopback_board.py) that runs the aarch64 app through qemu.
The tests then drive the board as a user would: re-deploy, a deploy that fails midway, a build on
the board, rollback, refused keys and host keys, full disks, a board without ARM-CL. Every check
of the board's state goes through the OpenSSH client, not the code under test.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from loopback_board import LoopbackBoard, keygen
from tiny_app import copy_tiny_app, tiny_spec

PASSWORD = "Hunter2-not-a-real-password"
PASSPHRASE = "correct-horse-battery-staple"
CROSS = "-DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-aarch64.cmake"


def qlspec(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qlspec", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=900)


def write_spec(root: Path, name: str, board: LoopbackBoard, **deploy: Any) -> str:
    section = board.deploy_section(**{"samples": 4, "repeat": 1, **deploy})
    (root / name).write_text(tiny_spec(extra=f"deploy: {json.dumps(section)}\n"))
    return name


def on_board(board: LoopbackBoard, command: str) -> str:
    r = board.shell(command)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def current(board: LoopbackBoard, app: Path) -> str:
    return on_board(board, f"readlink {app}/current").rsplit("/", 1)[-1]


def one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def deployed(tiny_app, tmp_path_factory):
    """The tiny app applied with deploy.enabled to a running loopback board: a copy of the session's
    tiny build (tests/tiny_app.py), so that only the deploy stage runs."""
    root = copy_tiny_app(tiny_app[0], tmp_path_factory.mktemp("deploy"))
    board = LoopbackBoard(root / "board").start()
    write_spec(root, "app.yaml", board, password=PASSWORD, passphrase=PASSPHRASE)
    r = qlspec("apply", "app.yaml", "--no-progress", cwd=root)
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        yield root, board, r
    finally:
        board.stop()


def test_apply_deploys_runs_on_the_board_and_reports_rung_board(deployed):
    root, board, r = deployed
    build = root / "build" / "tiny"
    info = json.loads((build / "deploy" / "deploy.json").read_text())
    app = board.home / "app"
    assert "deploy    done" in r.stdout and info["uploaded_bytes"] > 100_000
    assert current(board, app) == info["release"]
    assert on_board(board, f"cat {app}/history") == info["release"]
    # the board's current release starts, and its outputs equal GRAPH's
    assert "1 input(s), 1 output(s)" in on_board(board, f"cd {app}/current && qemu-aarch64 -cpu cortex-a72 -L / ./bin/qlspec-net --info")
    graph = np.load(build / "convert" / "outputs.npz")["graph"][:4]
    assert np.array_equal(np.load(build / "deploy" / "outputs.npz")["board"], graph)
    rows = {row["rung"]: row for row in json.loads((build / "report.json").read_text())["rows"]}
    assert rows["BOARD"]["mismatches"] == 0 and rows["BOARD"]["n"] == 4 and rows["BOARD"]["outputs"] == graph.size
    md = (build / "report.md").read_text()
    assert f"0 mismatches of {graph.size:,} against GRAPH |" in md and "## Deployment" in md  # BOARD row, against GRAPH
    # the AI application ran on the board on photos of the same faces, and matched the Python pipeline
    landmarks = json.loads((build / "deploy" / "app" / "landmarks.json").read_text())
    assert np.asarray([im["landmarks"] for im in landmarks["images"]]).shape == (4, 68, 2)
    app = json.loads((build / "deploy" / "app.json").read_text())
    assert app["photos"] == 4 and app["preprocess_mismatches"] == 0 and app["network_mismatches_vs_graph"] == 0
    assert app["landmark_max_abs_diff_px"] <= app["landmark_tolerance_px"]
    assert json.loads((build / "deploy" / "timing.json").read_text())["median_ms_per_batch"] > 0


def test_no_secret_reaches_output_records_or_reports(deployed):
    root, _, r = deployed
    shown = r.stdout + r.stderr + qlspec("plan", "app.yaml", cwd=root).stdout
    for secret in (PASSWORD, PASSPHRASE):
        assert secret not in shown
        for f in (root / "build").rglob("*"):
            assert not f.is_file() or secret.encode() not in f.read_bytes(), f


def test_a_redeploy_without_change_uploads_nothing(deployed):
    root, board, _ = deployed
    app = board.home / "app"
    rid = current(board, app)
    stamp = on_board(board, f"stat -c %i-%Y {app}/releases/{rid}/bin/qlspec-net")
    r = qlspec("deploy", "app.yaml", "--no-progress", cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"release {rid}: already on the board, nothing uploaded" in r.stdout
    assert json.loads((root / "build" / "tiny" / "deploy" / "deploy.json").read_text())["uploaded_bytes"] == 0
    assert on_board(board, f"stat -c %i-%Y {app}/releases/{rid}/bin/qlspec-net") == stamp
    assert "deploy    up to date" in qlspec("plan", "app.yaml", cwd=root).stdout


def test_a_deploy_failing_midway_leaves_the_previous_release_current_and_runnable(deployed):
    root, board, _ = deployed
    app = board.home / "app"
    before = current(board, app)
    # fails after the upload: the board's CMake cannot find the toolchain file
    write_spec(root, "broken-build.yaml", board, install="build", cmake_args=["-DCMAKE_TOOLCHAIN_FILE=/no/such/toolchain.cmake"])
    assert "build on the board (cmake) failed" in one_error_line(qlspec("deploy", "broken-build.yaml", "--no-progress", cwd=root))
    # fails when run: the launcher exits non-zero / hangs past the time limit
    write_spec(root, "broken-run.yaml", board, launcher="sh -c 'exit 7' x")
    assert "run qlspec-net" in one_error_line(qlspec("deploy", "broken-run.yaml", "--no-progress", cwd=root))
    write_spec(root, "hung-run.yaml", board, launcher="sh -c 'sleep 60' x", command_timeout=3)
    assert "took more than 3 s" in one_error_line(qlspec("deploy", "hung-run.yaml", "--no-progress", cwd=root))
    assert current(board, app) == before
    assert on_board(board, f"ls -A {app} | grep -c '^.upload-' || true") == "0"
    assert on_board(board, f"ls -A {app} | grep -c '^.deploy-lock' || true") == "0"  # released on failure too
    assert "arena" in on_board(board, f"cd {app}/current && qemu-aarch64 -cpu cortex-a72 -L / ./bin/qlspec-net --info")


def test_one_deploy_at_a_time_and_a_dead_deploys_lock_is_taken_over(deployed):
    root, board, _ = deployed
    app = board.home / "app"
    before = current(board, app)
    lock = f"{app}/.deploy-lock"
    on_board(board, f"mkdir {lock} && echo $(( $(date +%s) + 600 )) > {lock}/expires && printf 'f00d ws-2 pid 42' > {lock}/owner")
    for args in (("deploy", "app.yaml", "--no-progress"), ("deploy", "app.yaml", "--rollback")):
        line = one_error_line(qlspec(*args, cwd=root))
        assert f"the board is busy: another deploy (ws-2 pid 42) holds {lock}" in line
        assert 0 < int(re.search(r"it expires in (\d+) s", line)[1]) <= 600
    assert current(board, app) == before and on_board(board, f"cat {lock}/owner") == "f00d ws-2 pid 42"
    # the same lock past its expiry: its deploy died; this one takes it over, and trims a long history
    on_board(board, f"echo $(( $(date +%s) - 1 )) > {lock}/expires")
    on_board(
        board, f"seq -f 'gone%016g' 1200 > {app}/history.old && cat {app}/history.old {app}/history > {app}/h && mv {app}/h {app}/history"
    )
    r = qlspec("deploy", "app.yaml", "--no-progress", cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert on_board(board, f"ls -A {app} | grep -c '^.deploy-lock' || true") == "0"
    history = on_board(board, f"cat {app}/history").splitlines()
    assert len(history) == 1000 and history[-1] == current(board, app) == before
    # a deploy that died between making the lock and writing its expiry: the folder's age decides
    on_board(board, f"mkdir {lock} && printf 'x7\\n' > {lock}/expires && touch -d '2 hours ago' {lock}")
    r = qlspec("deploy", "app.yaml", "--no-progress", cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    on_board(board, f"mkdir {lock}")  # a fresh one without an expiry: busy, with no traceback
    assert "the board is busy: another deploy (unknown) holds" in one_error_line(qlspec("deploy", "app.yaml", "--no-progress", cwd=root))
    on_board(board, f"rm -rf {lock}")


def test_build_on_the_board_then_roll_back_and_prune(deployed):
    root, board, _ = deployed
    app = board.home / "app"
    pushed = current(board, app)
    write_spec(root, "on-board.yaml", board, install="build", cmake_args=[CROSS])
    r = qlspec("deploy", "on-board.yaml", "--no-progress", cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    built = current(board, app)
    assert built != pushed and "network.cpp" in on_board(board, f"ls {app}/current")
    assert json.loads((root / "build" / "tiny" / "deploy" / "deploy.json").read_text())["mismatches"] == 0
    r = qlspec("deploy", "app.yaml", "--rollback", cwd=root)
    assert r.returncode == 0, r.stderr
    assert f": {pushed} (was {built})" in r.stdout and current(board, app) == pushed
    # keep one release: the rolled-back-from build goes, and there is nothing left to roll back to
    write_spec(root, "keep-one.yaml", board, keep_releases=1)
    assert qlspec("deploy", "keep-one.yaml", "--no-progress", cwd=root).returncode == 0
    assert on_board(board, f"ls {app}/releases") == pushed
    assert "nothing to roll back to" in one_error_line(qlspec("deploy", "keep-one.yaml", "--rollback", cwd=root))


def test_a_key_the_board_does_not_accept_is_refused(deployed, tmp_path):
    root, board, _ = deployed
    stranger = keygen(tmp_path / "stranger")
    write_spec(root, "stranger.yaml", board, key=str(stranger))
    line = one_error_line(qlspec("deploy", "stranger.yaml", "--no-progress", cwd=root))
    assert f"{board.user}@127.0.0.1:{board.port}" in line and "refused the login" in line


def test_unknown_host_keys_need_the_flag_and_changed_ones_are_always_refused(deployed, tmp_path):
    root, board, _ = deployed
    fresh = tmp_path / "known_hosts"
    write_spec(root, "unknown.yaml", board, known_hosts=str(fresh))
    assert "no known_hosts file" in one_error_line(qlspec("deploy", "unknown.yaml", "--no-progress", cwd=root))
    fresh.write_text("example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    line = one_error_line(qlspec("deploy", "unknown.yaml", "--no-progress", cwd=root))
    assert "unknown host key ssh-ed25519 SHA256:" in line and "--trust-new-host-key" in line
    r = qlspec("deploy", "unknown.yaml", "--trust-new-host-key", "--no-progress", cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"[127.0.0.1]:{board.port} ssh-ed25519 " in fresh.read_text()
    assert qlspec("deploy", "unknown.yaml", "--no-progress", cwd=root).returncode == 0  # now known
    # the board "reinstalled": another key on the same address is refused, flag or not
    other = keygen(tmp_path / "other_host")
    board.trust(other)
    try:
        for flags in ([], ["--trust-new-host-key"]):
            line = one_error_line(qlspec("deploy", "app.yaml", *flags, "--no-progress", cwd=root))
            assert "host key has CHANGED" in line and "ssh-keygen -R" in line
    finally:
        board.trust()


def test_an_unreachable_board_is_one_line(deployed, tmp_path):
    root, board, _ = deployed
    from loopback_board import free_port

    write_spec(root, "nobody.yaml", board, port=free_port())
    assert "connection refused" in one_error_line(qlspec("deploy", "nobody.yaml", "--no-progress", cwd=root))


def test_a_full_board_disk_is_refused_before_anything_changes(deployed, tmp_path):
    root, _, _ = deployed
    small = LoopbackBoard(tmp_path / "small")
    small.setup = f"mount -t tmpfs -o size=1800k tmpfs {small.home}"
    small.start()
    try:
        write_spec(root, "small.yaml", small)
        r = qlspec("deploy", "small.yaml", "--no-progress", cwd=root)
        assert r.returncode == 0, r.stdout + r.stderr
        first = current(small, small.home / "app")
        write_spec(root, "small-build.yaml", small, install="build", cmake_args=[CROSS])
        line = one_error_line(qlspec("deploy", "small-build.yaml", "--no-progress", cwd=root))
        assert "the board's disk is full" in line and "MiB free" in line
        assert current(small, small.home / "app") == first
        assert on_board(small, f"ls {small.home}/app/releases") == first
    finally:
        small.stop()


def test_a_board_without_arm_compute_library_is_named(deployed, tmp_path):
    root, _, _ = deployed
    bare = LoopbackBoard(tmp_path / "bare")
    libs = "/usr/lib/aarch64-linux-gnu"
    bare.setup = f"""
mkdir -p {bare.folder}/orig {bare.folder}/view
mount --bind {libs} {bare.folder}/orig
mount -t tmpfs tmpfs {bare.folder}/view
for f in {bare.folder}/orig/*; do case "${{f##*/}}" in libarm_compute*) ;; *) ln -s "$f" {bare.folder}/view/ ;; esac; done
mount --bind {bare.folder}/view {libs}
"""
    bare.start()
    try:
        write_spec(root, "bare.yaml", bare)
        line = one_error_line(qlspec("deploy", "bare.yaml", "--no-progress", cwd=root))
        assert "no ARM Compute Library" in line and "libarm_compute" in line
        assert bare.shell(f"test -e {bare.home}/app/current").returncode == 1
    finally:
        bare.stop()
