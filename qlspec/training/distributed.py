"""Data-parallel training on torch.distributed: launching the processes, and the reductions they share.

`launch(fn, job, settings)` runs ``fn(job)`` in every process of a process group and returns what
rank 0's call returned:

- one process on one node (the default): ``fn(job)`` in this process, no process group;
- in `qlspec apply` started by torchrun on one or several nodes (`crew`): rank 0 runs the pipeline
  and hands ``(fn, job)`` to the other ranks, which wait for it, run ``fn(job)`` with rank 0 in
  torchrun's group (``env://``) and wait for the next job;
- in any other script torchrun started (``RANK``, ``WORLD_SIZE``, ... in the environment): this
  process joins torchrun's group and runs ``fn(job)``, as every other rank of that script does;
- otherwise ``settings.processes`` processes are spawned (``torch.multiprocessing``, start method
  spawn) and join a group at ``tcp://master_addr:master_port``; rank 0's return value comes back
  through a file. A failure in any process raises here, with that process's traceback.

Inside a group, `World` says who this process is (in a crew, only while a job runs: between jobs rank
0 runs the other stages alone, as one process); `all_reduce_`, `all_gather_cat` and `broadcast_` are
no-ops without one, so the code that calls them runs unchanged in one process. `sync_batch_norm`
makes the BatchNorm layers of a net normalise with the statistics of the whole (global) batch, so a
step of N processes computes what one process computes on the same batch, up to float rounding.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn
from torch.multiprocessing.spawn import ProcessException, ProcessExitedException

from qlspec.errors import QlspecError
from qlspec.spec.models import Distributed
from qlspec.training.torchrun import started_by_torchrun

__all__ = [
    "Role",
    "World",
    "all_gather_cat",
    "all_reduce_",
    "barrier",
    "broadcast_",
    "crew",
    "launch",
    "sync_batch_norm",
    "team_size",
    "world",
]

TIMEOUT_S = 1800.0  # a process that stops answering fails the others after this long
CREW_WAIT_S = 7 * 24 * 3600.0  # how long a crew member waits for rank 0's next job (its stages may take hours)

_crew: Any = None  # the control group of this process's crew (`crew`), None outside one
_in_job = False  # whether a crew job runs in this process now
_torn = False  # whether a crew job failed here: the other ranks may be stuck in it and cannot be told to stop


@dataclass(frozen=True)
class World:
    """This process in its group: ``rank`` of ``size`` (0 of 1 without a group), ``local_rank`` on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints and outputs (rank 0)."""
        return self.rank == 0


def world() -> World:
    """Who this process is in the default process group (in a crew, only while a job runs)."""
    if not (dist.is_available() and dist.is_initialized()) or (_crew is not None and not _in_job):
        return World()
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return World(dist.get_rank(), dist.get_world_size(), local)


def team_size(settings: Distributed) -> int:
    """How many processes `launch` runs a job in: torchrun's world in a crew, else the spec's."""
    if _crew is not None:
        return dist.get_world_size()
    return settings.world_size


def launch(fn: Callable[[Any], Any], job: Any, settings: Distributed, *, shared: Path | None = None, timeout_s: float = TIMEOUT_S) -> Any:
    """Run ``fn(job)`` on every process of the group the spec's ``training.distributed`` describes
    (or of the torchrun crew this process leads); rank 0's return value (module docstring). `shared`
    is a folder every process reads: in a crew, a node that does not see it stops with a clear error."""
    if _crew is not None:
        _tell(("run", fn, job, shared))
        return _run_job(fn, job)
    if started_by_torchrun():
        if not dist.is_initialized():
            dist.init_process_group(settings.backend, init_method="env://")
        return fn(job)
    if settings.world_size == 1:
        return fn(job)
    if settings.nodes > 1:
        raise QlspecError(
            f"training.distributed.nodes is {settings.nodes}: several machines meet through torchrun's rendezvous; start "
            f"`torchrun --nnodes {settings.nodes} --nproc-per-node {settings.processes} --rdzv-backend c10d "
            "--rdzv-endpoint HOST:PORT -m qlspec apply APP.yaml` on every node",
            where="training.distributed",
        )
    port = settings.master_port or free_port()
    # torch logs a warning per process it stops after another failed; the error below says what happened
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="qlspec-dist-") as tmp:
        folder = Path(tmp)
        address = f"tcp://{settings.master_addr}:{port}"
        try:
            mp.start_processes(
                _spawned, args=(fn, job, settings, address, folder, timeout_s), nprocs=settings.processes, join=True, start_method="spawn"
            )
        except ProcessException as e:
            if isinstance(e, ProcessExitedException):  # killed, or gone without a Python error
                how = f"was killed by {e.signal_name}" if e.signal_name else f"exited with status {e.exit_code}"
                raise QlspecError(
                    f"training process {e.error_index} {how}; run the command again to resume from the last checkpoint",
                    where="training.distributed",
                ) from None
            # a user error in a process is the user's error here too: one line, not a traceback
            for err in sorted(folder.glob("error-*.pt")):
                kind, message, where = torch.load(err, weights_only=False)
                raise kind(message, where) from None
            raise
        return torch.load(folder / "rank0.pt", weights_only=False)["value"]


def _spawned(
    local_rank: int, fn: Callable[[Any], Any], job: Any, settings: Distributed, address: str, folder: Path, timeout_s: float
) -> None:
    os.environ["LOCAL_RANK"] = str(local_rank)  # read by `world` (torchrun sets it the same way)
    dist.init_process_group(
        settings.backend,
        init_method=address,
        rank=local_rank,
        world_size=settings.processes,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    try:
        value = fn(job)
        if local_rank == 0:
            torch.save({"value": value}, folder / "rank0.pt")
        dist.barrier()
    except QlspecError as e:
        torch.save((type(e), e.message, e.where), folder / f"error-{local_rank}.pt")
        raise
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    """A TCP port free on this machine just now (for the rank-0 rendezvous of spawned processes)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------------------------
# a pipeline under torchrun: rank 0 leads, the others join its training jobs


@dataclass(frozen=True)
class Role:
    """This process's part in a command torchrun started: ``main`` runs the command (rank 0, or the
    only process without torchrun); the others have followed rank 0's jobs, which ended with ``exit_code``."""

    main: bool
    exit_code: int = 0


@contextlib.contextmanager
def crew(settings: Distributed) -> Iterator[Role]:
    """Every rank torchrun started for one `qlspec apply` enters this block; without torchrun it yields
    ``Role(main=True)`` and does nothing.

    Under torchrun, every rank joins torchrun's group (``env://``, backend ``settings.backend``) and a
    gloo control group. Rank 0 gets ``main=True`` and runs the stages inside the block; each of its
    `launch` calls sends ``(fn, job)`` to the others, runs it with them, and then goes on alone. The
    other ranks run those jobs as they come (inside `crew`, before their block starts) until rank 0
    leaves its block, and get ``main=False`` with rank 0's exit status: 0, 2 for a `QlspecError`, 1 for
    anything else. Several nodes work the same way; each needs the build folder at the same path (a
    shared filesystem), as they read the data stage's output and rank 0's checkpoints there.
    """
    global _crew, _torn
    if not started_by_torchrun():
        yield Role(main=True)
        return
    if not dist.is_initialized():
        if settings.backend == "nccl":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group(settings.backend, init_method="env://", timeout=datetime.timedelta(seconds=TIMEOUT_S))
    _crew = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=CREW_WAIT_S))
    try:
        if dist.get_rank() != 0:
            yield Role(main=False, exit_code=_follow())
            return
        status = 0
        try:
            yield Role(main=True)
        except BaseException as e:
            status = 2 if isinstance(e, QlspecError) else 1
            raise
        finally:
            if not _torn:  # else this process exits now, and torchrun stops the ranks stuck in the job
                _tell(("stop", status))
    finally:
        _crew, _torn = None, False
        dist.destroy_process_group()


def _tell(message: tuple) -> None:
    """Rank 0: send `message` to every other rank of the crew."""
    dist.broadcast_object_list([message], src=0, group=_crew)


def _follow() -> int:
    """A rank other than 0: run rank 0's jobs as they come; rank 0's exit status once it stops."""
    while True:
        box: list[Any] = [None]
        dist.broadcast_object_list(box, src=0, group=_crew)
        kind, *rest = box[0]
        if kind == "stop":
            return int(rest[0])
        fn, job, shared = rest
        if shared is not None and not Path(shared).is_dir():
            raise QlspecError(
                f"rank {dist.get_rank()} on {socket.gethostname()} cannot see {shared}: on several nodes, put --build-dir on a "
                "filesystem every node mounts at the same path",
                where="training.distributed",
            )
        _run_job(fn, job)


def _run_job(fn: Callable[[Any], Any], job: Any) -> Any:
    """``fn(job)`` as one process of the crew's group; every rank leaves together."""
    global _in_job, _torn
    _in_job = True
    try:
        value = fn(job)
        dist.barrier()
        return value
    except BaseException as e:
        _torn = True
        if isinstance(e, RuntimeError) and _lost_peer(e):
            seen = re.search(r"Connection (?:closed|reset) by peer \S*", str(e))
            what = seen.group(0) if seen else str(e).strip().splitlines()[0][:160]
            raise QlspecError(
                f"another training process stopped ({what}): its node's output says why", where="training.distributed"
            ) from None
        raise
    finally:
        _in_job = False


def _lost_peer(e: RuntimeError) -> bool:
    """Whether `e` is a collective failing because another process of the group went away."""
    text = str(e)
    return isinstance(e, dist.DistError) or "Connection closed by peer" in text or "Connection reset by peer" in text


# --------------------------------------------------------------------------------------------------
# reductions (no-ops in one process)


def _wire(t: Tensor) -> Tensor:
    """`t` where the backend can send it: nccl moves only CUDA tensors."""
    if dist.get_backend() == "nccl" and t.device.type != "cuda":
        return t.to(torch.device("cuda", torch.cuda.current_device()))
    return t


def all_reduce_(t: Tensor, op: Literal["sum", "max", "min"] = "sum") -> Tensor:
    """Reduce `t` in place over all processes (sum, max or min); returns `t`."""
    if world().size > 1:
        red = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op]
        sent = _wire(t)
        dist.all_reduce(sent, red)
        if sent is not t:
            t.copy_(sent)
    return t


def all_gather_cat(t: Tensor) -> Tensor:
    """The 1-D tensors `t` of every process, concatenated in rank order (sizes may differ)."""
    w = world()
    if w.size == 1:
        return t
    n = _wire(torch.tensor([t.numel()], dtype=torch.int64, device=t.device))
    sizes = [torch.zeros_like(n) for _ in range(w.size)]
    dist.all_gather(sizes, n)
    longest = int(max(int(s) for s in sizes))
    padded = torch.zeros(longest, dtype=t.dtype, device=n.device)
    padded[: t.numel()] = t.reshape(-1)
    parts = [torch.empty_like(padded) for _ in range(w.size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s)] for p, s in zip(parts, sizes, strict=True)]).to(t.device)


def barrier() -> None:
    """Wait until every process gets here (e.g. until rank 0 has written a checkpoint)."""
    if world().size > 1:
        dist.barrier()


class _AllReduceSum(torch.autograd.Function):
    """``sum over processes of x``; its gradient is the sum over processes of the output gradients."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return all_reduce_(x.clone())

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return all_reduce_(grad.clone())


def broadcast_(tensors: list[Tensor], src: int = 0) -> None:
    """Copy rank `src`'s values of `tensors` into every process's (in place)."""
    if world().size > 1:
        for t in tensors:
            sent = _wire(t)
            dist.broadcast(sent, src)
            if sent is not t:
                t.copy_(sent)


# --------------------------------------------------------------------------------------------------
# batch norm over the global batch


class _GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are those of the batch of all processes together.

    Sums and sums of squares are reduced in float64 by a differentiable all-reduce (its backward
    all-reduces the gradients, as `torch.nn.SyncBatchNorm` does), so the forward pass and the
    gradients equal one process's on the concatenated batch up to float rounding. Works on CPU (gloo)
    as on CUDA; eval mode and a single process are plain BatchNorm2d.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or world().size == 1:
            return super().forward(x)
        dims = (0, 2, 3)
        xd = x.double()
        count = torch.full((1,), x.numel() // x.shape[1], dtype=torch.float64, device=x.device)
        total = _AllReduceSum.apply(torch.cat([xd.sum(dims), (xd * xd).sum(dims), count]))
        c = x.shape[1]
        n = total[2 * c]
        mean = total[:c] / n
        var = (total[c : 2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            assert self.num_batches_tracked is not None  # tracked together with the running statistics
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(m * mean.to(self.running_mean.dtype))
                self.running_var.mul_(1 - m).add_(m * (var * n / (n - 1)).to(self.running_var.dtype))
        shape = (1, c, 1, 1)
        y = (xd - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + self.eps)
        if self.affine:
            y = y * self.weight.double().reshape(shape) + self.bias.double().reshape(shape)
        return y.to(x.dtype if x.dtype != torch.bfloat16 else torch.float32)


@contextlib.contextmanager
def sync_batch_norm(net: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every plain ``nn.BatchNorm2d`` of `net` normalises over the global batch (class
    swapped in place, so parameters, buffers, state-dict keys and torch.fx graphs are unchanged); restored after."""
    swapped = [m for m in net.modules() if type(m) is nn.BatchNorm2d]
    for m in swapped:
        m.__class__ = _GlobalBatchNorm2d
    try:
        yield net
    finally:
        for m in swapped:
            m.__class__ = nn.BatchNorm2d
