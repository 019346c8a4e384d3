"""Data-parallel training on torch.distributed: launching the processes, and the reductions they share.

`launch(fn, job, settings)` runs ``fn(job)`` in every process of a process group and returns what
rank 0's call returned:

- one process on one node (the default): ``fn(job)`` in this process, no process group;
- under torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in the
  environment, as torchrun sets them): this process joins torchrun's group (``env://``) and runs
  ``fn(job)``, as every other rank of the script torchrun started does (the pipeline stages refuse
  to run under torchrun, `refuse_torchrun`: each rank would run the whole pipeline);
- otherwise ``settings.processes`` processes are spawned (``torch.multiprocessing``, start method
  spawn) and join a group at ``tcp://master_addr:master_port``; rank 0's return value comes back
  through a file. A failure in any process raises here, with that process's traceback.

Inside a group, `World` says who this process is; `all_reduce_`, `all_gather_cat` and `broadcast_` are
no-ops without one, so the code that calls them runs unchanged in one process. `sync_batch_norm`
makes the BatchNorm layers of a net normalise with the statistics of the whole (global) batch, so a
step of N processes computes what one process computes on the same batch, up to float rounding.
"""

from __future__ import annotations

import contextlib
import datetime
import os
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
from torch.multiprocessing.spawn import ProcessException

from qlspec.errors import QlspecError
from qlspec.spec.models import Distributed

__all__ = [
    "World",
    "all_gather_cat",
    "all_reduce_",
    "barrier",
    "broadcast_",
    "launch",
    "sync_batch_norm",
    "torchrun_env",
    "world",
]

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


TIMEOUT_S = 1800.0  # a process that stops answering fails the others after this long


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
    """Who this process is in the default process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return World(dist.get_rank(), dist.get_world_size(), local)


def torchrun_env() -> bool:
    """Whether this process was started by torchrun (its rendezvous variables are set)."""
    return all(v in os.environ for v in _TORCHRUN_VARS) and int(os.environ["WORLD_SIZE"]) > 1


def refuse_torchrun(what: str) -> None:
    """`what` (a pipeline stage) runs its own processes: under torchrun every rank would run the whole
    pipeline and write the same build folder, so say how to run it instead."""
    if torchrun_env():
        raise QlspecError(
            f"{what} launches its own training processes: run `qlspec apply` once, without torchrun, with "
            "training.distributed.processes set (several nodes are not supported by `qlspec apply` yet)",
            where="training.distributed",
        )


def launch(fn: Callable[[Any], Any], job: Any, settings: Distributed, *, timeout_s: float = TIMEOUT_S) -> Any:
    """Run ``fn(job)`` on every process of the group the spec's ``training.distributed`` describes;
    rank 0's return value (module docstring)."""
    if torchrun_env():
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
    with tempfile.TemporaryDirectory(prefix="qlspec-dist-") as tmp:
        folder = Path(tmp)
        address = f"tcp://{settings.master_addr}:{port}"
        try:
            mp.start_processes(
                _spawned, args=(fn, job, settings, address, folder, timeout_s), nprocs=settings.processes, join=True, start_method="spawn"
            )
        except ProcessException:
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
