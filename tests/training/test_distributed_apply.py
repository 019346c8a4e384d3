"""`qlspec apply` training in several processes (issue 16), as a user runs it.

- Under torchrun, rank 0 runs the pipeline and the other ranks join its training jobs
  (`qlspec.training.distributed.crew`). Two torchrun agents on this machine stand for two nodes:
  static rendezvous at 127.0.0.1, one process each, so node 0 holds rank 0. The build folder is the
  shared filesystem a cluster would give them.
- With ``training.distributed.processes: 2`` apply spawns the processes itself; one of them killed
  mid-epoch fails the run with one line, and the next apply resumes from the last checkpoint.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_app import copy_tiny_app

from qlspec.training.distributed import free_port

pytestmark = pytest.mark.slow

EPOCHS = "epochs: 2, batch_size: 32, threads: 2"  # two epochs: a checkpoint to resume from before the last
APPLY = ["-m", "qlspec", "apply", "app.yaml", "--until", "quantise", "--no-progress"]


def two_epoch_app(tiny_app, dest: Path, distributed: str = "") -> Path:
    """A copy of the tiny app with two epochs of float training (so train and quantise are stale),
    `distributed` added to its training section."""
    app = copy_tiny_app(tiny_app[0], dest)
    spec = (app / "app.yaml").read_text()
    assert "epochs: 1, batch_size: 32, threads: 2}" in spec
    (app / "app.yaml").write_text(spec.replace("epochs: 1, batch_size: 32, threads: 2}", EPOCHS + distributed + "}"))
    return app


@pytest.fixture(scope="module")
def spawned(tiny_app, tmp_path_factory) -> Path:
    """The reference: the two-epoch app trained and quantised by apply in 2 spawned processes."""
    app = two_epoch_app(tiny_app, tmp_path_factory.mktemp("spawned"), ", distributed: {processes: 2}")
    r = subprocess.run([sys.executable, *APPLY], cwd=app, capture_output=True, text=True)
    assert r.returncode == 0 and "training in 2 processes (gloo)" in r.stdout, r.stdout + r.stderr
    return app / "build" / "tiny"


def on_two_nodes(node0: Path, node1: Path) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """`torchrun --nnodes 2 --nproc-per-node 1 --node-rank R ... -m qlspec apply` run in `node0` and `node1` at once."""
    port = free_port()

    def agent(rank: int, cwd: Path) -> subprocess.Popen:
        rendezvous = ["--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank), "--master-addr", "127.0.0.1"]
        cmd = [sys.executable, "-m", "torch.distributed.run", *rendezvous, "--master-port", str(port), *APPLY]
        return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    agents = [agent(0, node0), agent(1, node1)]
    done = []
    for a in agents:
        stdout, _ = a.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(a.args, a.returncode, stdout, ""))
    return done[0], done[1]


def ours(text: str) -> list[str]:
    """The lines qlspec printed (torchrun's own warnings and reports left out)."""
    return [line for line in text.splitlines() if line and not line.startswith(("W1", "E1", "I1")) and "torch/distributed" not in line]


def weights(build: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {f: torch.load(build / stage / f, weights_only=True) for stage, f in (("train", "model.pt"), ("quantise", "fq_state.pt"))}


def test_two_nodes_under_torchrun_train_what_two_spawned_processes_train(tiny_app, spawned, tmp_path):
    shared = two_epoch_app(tiny_app, tmp_path / "shared")
    node0, node1 = on_two_nodes(shared, shared)
    assert node0.returncode == 0 and node1.returncode == 0, node0.stdout + node1.stdout
    assert "  training in 2 processes (gloo)" in ours(node0.stdout) and "  QAT in 2 processes (gloo)" in ours(node0.stdout)
    assert not any(line.startswith(("train", "quantise", "report:")) for line in ours(node1.stdout))  # rank 1 only trains

    by_torchrun, by_spawn = weights(shared / "build" / "tiny"), weights(spawned)
    for f, state in by_torchrun.items():
        assert state.keys() == by_spawn[f].keys()
        for k, v in state.items():
            assert torch.equal(v, by_spawn[f][k]), (f, k)  # the same two ranks, seed and reductions: bit for bit
    one = weights(tiny_app[0] / "build" / "tiny")["model.pt"]  # one process, one epoch
    assert any(not torch.equal(v, one[k]) for k, v in by_torchrun["model.pt"].items() if v.is_floating_point())


def test_a_node_that_cannot_see_the_build_folder_stops_every_rank_with_one_line_each(tiny_app, tmp_path):
    shared = two_epoch_app(tiny_app, tmp_path / "shared")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "app.yaml").write_text((shared / "app.yaml").read_text())  # the spec, but no build folder
    node0, node1 = on_two_nodes(shared, elsewhere)
    assert node0.returncode != 0 and node1.returncode != 0
    errors0 = [line for line in ours(node0.stdout) if line.startswith("error:")]
    errors1 = [line for line in ours(node1.stdout) if line.startswith("error:")]
    assert len(errors1) == 1 and "rank 1" in errors1[0] and "cannot see build/tiny" in errors1[0], node1.stdout
    assert len(errors0) == 1 and "another training process stopped" in errors0[0], node0.stdout
    assert "[rank0]: Traceback" not in node0.stdout and "[rank1]: Traceback" not in node1.stdout
    assert (shared / "build" / "tiny" / "train" / "model.pt").exists()  # the built stage is still there


def test_when_rank_0_fails_outside_training_every_node_says_so(tmp_path):
    """Rank 0's data stage fails (folders without images): the other node has only waited for jobs,
    and says in one line that rank 0 stopped, with rank 0's exit status, not just torchrun's report."""
    app = tmp_path / "app"
    (app / "empty").mkdir(parents=True)
    (app / "app.yaml").write_text(
        "name: nothing\nextends: [networks/3ddfa-mb05.yaml]\nnetwork: {width: 0.25}\n"
        "data: {kind: 300w-lp, root: empty, val_root: empty, bfm: empty}\ntraining: {epochs: 1, batch_size: 16, threads: 1}\n"
    )
    node0, node1 = on_two_nodes(app, app)
    assert node0.returncode != 0 and node1.returncode != 0
    errors0 = [line for line in ours(node0.stdout) if line.startswith("error:")]
    errors1 = [line for line in ours(node1.stdout) if line.startswith("error:")]
    assert len(errors0) == 1 and "empty" in errors0[0], node0.stdout
    assert errors1 == [f"error: rank 1 on {socket.gethostname()}: rank 0 stopped the apply (exit status 2): its output says why"], (
        node1.stdout
    )


def training_children(pid: int) -> list[int]:
    """The processes `pid` spawned to train (torch.multiprocessing, start method spawn), oldest first."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def test_a_training_process_killed_mid_epoch_fails_in_one_line_and_the_next_apply_resumes(tiny_app, spawned, tmp_path):
    app = two_epoch_app(tiny_app, tmp_path / "killed", ", distributed: {processes: 2}")
    cmd = [sys.executable, "-m", "qlspec", "apply", "app.yaml", "--until", "train", "--no-progress"]
    first = subprocess.Popen(cmd, cwd=app, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = app / "build" / "tiny" / ".partial"
    deadline = time.monotonic() + 300
    while not list(partial.glob("train-*/checkpoints/last.pt")):  # epoch 1 is done and checkpointed
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.01)
    os.kill(training_children(first.pid)[-1], signal.SIGKILL)
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 2, stdout + stderr
    assert stderr.strip().splitlines() == [stderr.strip()] and "was killed by SIGKILL" in stderr, stderr
    assert "Traceback" not in stdout + stderr

    again = subprocess.run(cmd, cwd=app, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "  resumed after epoch 1," in again.stdout, again.stdout
    resumed, uninterrupted = (torch.load(b / "train" / "model.pt", weights_only=True) for b in (app / "build" / "tiny", spawned))
    for k, v in uninterrupted.items():
        assert torch.equal(v, resumed[k]), k  # resuming in two processes continues exactly where the checkpoint stopped
