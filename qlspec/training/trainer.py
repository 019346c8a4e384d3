"""The training loop: epochs of shuffled mini-batches, per-epoch validation NME, checkpoints, resume.

`train` is used for float training and, unchanged, for quantisation-aware training: it never
looks at module types. A QAT caller passes the fake-quantised net, its controllers'
per-epoch step as `on_epoch_start` (and `on_validation_start`), and its own parameter groups as
`params_for_optimiser` (e.g. clipping bounds without weight decay). All state that must survive an
interruption has to live in the net's ``state_dict`` (parameters and buffers) or be a pure
function of the epoch number, since that is what the checkpoint restores.

Semantics:

- Epoch ``e`` (0-based) shuffles the training set with a ``torch.Generator`` seeded from
  ``(seed, e)`` and runs ``len(train_set) // batch_size`` steps (the incomplete last batch is
  dropped, so BatchNorm never sees a batch of one).
- Learning rate per step ``t`` of ``T`` in total: linear warm-up from ``lr / 10`` over
  ``warmup_epochs``, then ``"cosine"``: ``lr * (1 + cos(pi * u)) / 2`` with ``u`` the fraction of
  post-warm-up steps done (ends at 0), or ``"step"``: ``lr * 0.2**k`` with ``k`` the number of
  milestones (60 % and 85 % of the steps) passed, as 3DDFA's ``0.2`` decay. A parameter group
  may carry an ``lr_scale`` key (default 1): its learning rate is the schedule's times that.
- After every epoch, ``ckpt_dir/last.pt`` is replaced atomically (temp file + rename) by a dict:
  ``format``, ``settings`` (the hyper-parameters that must match to resume), ``epoch`` (epochs
  done), ``model`` and ``optimiser`` state dicts, ``torch_rng`` and ``history``. If ``last.pt``
  exists when `train` starts, training resumes after its epoch; settings that differ raise
  `CheckpointError`. A finished run returns at once with the stored history.
- Determinism: the global torch RNG is seeded with `seed` at the start and restored on resume; the
  result is bit-identical to an uninterrupted run on the same machine and thread count.
- Several processes (`qlspec.training.distributed`: called in every process of a group): ``batch_size``
  stays the global batch; step ``i`` of every process takes the same global batch of the same
  shuffled order and process ``r`` of ``N`` trains on every ``N``-th image of it from the ``r``-th
  (DistributedSampler's split). Gradients are averaged by DistributedDataParallel (rebuilt at each
  epoch after ``on_epoch_start``, so hooks may change which parameters learn) and BatchNorm uses the
  statistics of the global batch, so a step equals one process's step on the whole batch up to float
  rounding. The logged losses are means over all processes. Only rank 0 validates, keeps the history
  and writes the checkpoint; every rank reads it to resume, whatever the process count that wrote it.
- `hardware` (`qlspec.training.hardware`) moves the net and batches to a device, may run the
  forward pass under bf16 autocast and channels_last, and prepares batches in DataLoader workers;
  the order of images and the arithmetic of the loss are the same whatever it says.
- Memory format: the input transform's batches are NHWC arrays seen as NCHW (channels_last strides),
  so convolutions on a CPU run channels_last from the first layer, which is the faster layout there
  (a MobileNet step 27 % faster than from a contiguous NCHW batch). A net for which
  `channels_last_safe` says no gets its batches copied to contiguous NCHW instead.
- ``hardware.compile``: the training steps (forward, loss and backward) call ``torch.compile(net)``
  (inside DistributedDataParallel with several processes), compiled at its first call and again when
  something it depends on changes (e.g. an epoch hook starting quantisation); validation, evaluators,
  `on_*` hooks and checkpoints see `net` itself, so state-dict keys never carry ``_orig_mod.``. If a
  compiled step raises, the net's buffers (batch-norm statistics) are put back as they were before it,
  one warning names the error, and that step and all later ones run eagerly (an error that is not
  the compiler's then raises from the eager step). In a group every process compiles the same net
  with the same torch, so all of them fall back together.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from torch import nn

from qlspec import atomic
from qlspec.data.faceset import FaceSet, Images
from qlspec.errors import CheckpointError
from qlspec.face.morphable import FaceModel, synthetic_face_model
from qlspec.face.params import ParamStats
from qlspec.metrics.nme import NMEReport, nme_report
from qlspec.preprocess import DEFAULT, InputTransform
from qlspec.training.distributed import World, all_reduce_, barrier, sync_batch_norm, world
from qlspec.training.hardware import Hardware
from qlspec.training.loss import FaceLoss, LossConfig

__all__ = ["CHECKPOINT_NAME", "TrainResult", "channels_last_safe", "evaluate", "predict", "train"]

CHECKPOINT_NAME = "last.pt"
_FORMAT = "qlspec-train/1"

EpochHook = Callable[[int, nn.Module], None]

_log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What `train` did.

    Attributes:
        history: one dict per epoch done (all epochs, including those before a resume) with
            ``epoch`` (1-based), ``lr`` (at the epoch's last step), ``loss``, ``param_loss``,
            ``landmark_loss`` (training means), ``val_nme``, ``val_nme_mean_of_bins`` (fractions),
            ``val_bins`` (list of {yaw, n, nme}) and ``seconds`` (wall time of the epoch).
        val: NME report of the final weights on the validation set (None on ranks other than 0).
        resumed_from: epochs already done in the checkpoint found at start (0 if none).
        seconds: wall time of this call.
        checkpoint: path of the last checkpoint.
    """

    history: list[dict[str, Any]]
    val: NMEReport | None
    resumed_from: int
    seconds: float
    checkpoint: Path


def _lr_at(step: int, total: int, lr: float, warmup: int, schedule: str) -> float:
    if step < warmup:
        return lr * (0.1 + 0.9 * step / warmup)
    u = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * u))
    return lr * 0.2 ** sum(u >= m for m in (0.6, 0.85))


def _make_optimiser(
    params: Iterable[Any], name: str, lr: float, momentum: float, nesterov: bool, weight_decay: float
) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of sgd, adam, adamw (got {name!r})")


def _device(net: nn.Module) -> torch.device:
    for p in net.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def predict(
    net: nn.Module,
    faceset: FaceSet,
    stats: ParamStats,
    batch_size: int = 256,
    face_model: FaceModel | None = None,
    transform: InputTransform = DEFAULT,
) -> tuple[np.ndarray, np.ndarray]:
    """Run `net` in eval mode over `faceset`: de-normalised params float32 ``(N, 62)`` and
    landmarks float32 ``(N, 2, 68)`` in crop pixels (the `FaceSet` convention).

    The net is left in eval mode.
    """
    face_model = face_model or synthetic_face_model()
    net.eval()
    dev = _device(net)
    outs = []
    for s in range(0, len(faceset), batch_size):
        x = transform(faceset.images[s : s + batch_size]).to(dev)
        outs.append(net(x).float().cpu().numpy())
    z = np.concatenate(outs) if outs else np.zeros((0, stats.mean.shape[0]), np.float32)
    params = stats.denormalise(z.astype(np.float64))
    landmarks = face_model.landmarks(params)[:, :2]
    return params.astype(np.float32), landmarks.astype(np.float32)


def evaluate(
    net: nn.Module,
    faceset: FaceSet,
    stats: ParamStats,
    batch_size: int = 256,
    face_model: FaceModel | None = None,
    transform: InputTransform = DEFAULT,
) -> NMEReport:
    """NME report of `net` on `faceset` (predicted vs stored landmarks, binned on the stored yaw)."""
    _, lmk = predict(net, faceset, stats, batch_size, face_model, transform)
    return nme_report(lmk, faceset.landmarks, faceset.yaw_deg)


def train(
    net: nn.Module,
    train_set: FaceSet,
    val_set: FaceSet,
    *,
    stats: ParamStats,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float = 0.9,
    nesterov: bool = True,
    weight_decay: float = 5e-4,
    loss_cfg: LossConfig = LossConfig(),
    ckpt_dir: Path,
    seed: int = 0,
    progress: bool = False,
    on_epoch_start: EpochHook | None = None,
    params_for_optimiser: Iterable[Any] | None = None,
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd",
    schedule: Literal["cosine", "step"] = "cosine",
    warmup_epochs: float = 0.0,
    on_validation_start: EpochHook | None = None,
    face_model: FaceModel | None = None,
    val_batch_size: int = 256,
    transform: InputTransform = DEFAULT,
    evaluator: Callable[[nn.Module], NMEReport | None] | None = None,
    hardware: Hardware | None = None,
    find_unused_parameters: bool = False,
) -> TrainResult:
    """Train `net` in place on `train_set`, validating on `val_set` after each epoch (module docstring).

    `on_epoch_start(epoch, net)` runs before epoch ``epoch`` (0-based) trains, also after a resume;
    `on_validation_start(epoch, net)` before its validation. An exception raised by either leaves
    the checkpoint of the last finished epoch in place. `face_model` (default: the synthetic
    model) turns parameters into landmarks for the loss and the NME; `transform` turns stored images
    into network inputs (the spec's ``preprocess``). `evaluator(net)`, when given, validates instead
    of the float forward pass whenever it returns a report (QAT: the integer arithmetic once the
    clipping bounds are frozen). `hardware` says where and how fast (module docstring);
    `find_unused_parameters` is DistributedDataParallel's, for nets with learnable parameters that some
    epochs do not use (PACT bounds before quantisation starts). Returns a `TrainResult`; the
    net ends in eval mode with the final (not the best) weights.
    """
    if epochs < 0 or batch_size < 2 or len(train_set) < batch_size:
        raise ValueError(f"need epochs >= 0 and 2 <= batch_size <= len(train_set) (got {epochs}, {batch_size}, {len(train_set)})")
    hardware = hardware or Hardware()
    w = world()
    if batch_size % w.size:
        raise ValueError(f"batch_size ({batch_size}) must be divisible by the number of processes ({w.size})")
    face_model = face_model or synthetic_face_model()
    t_start = time.perf_counter()
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = ckpt_dir / CHECKPOINT_NAME
    if hardware.device is not None:
        net.to(hardware.device)
    if hardware.channels_last:
        net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # Module.to accepts memory_format
    dev = _device(net)
    nhwc_ok = channels_last_safe(net, dev)

    steps_per_epoch = len(train_set) // batch_size
    total_steps = steps_per_epoch * epochs
    warmup_steps = round(warmup_epochs * steps_per_epoch)
    settings = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "momentum": momentum,
        "nesterov": nesterov,
        "weight_decay": weight_decay,
        "loss": loss_cfg.as_dict(),
        "seed": seed,
        "optimizer": optimizer,
        "schedule": schedule,
        "warmup_epochs": warmup_epochs,
        "n_train": len(train_set),
        "n_val": len(val_set),
    }

    opt = _make_optimiser(
        params_for_optimiser if params_for_optimiser is not None else net.parameters(),
        optimizer,
        lr,
        momentum,
        nesterov,
        weight_decay,
    )
    loss_fn = FaceLoss(face_model, stats, loss_cfg)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    torch.manual_seed(seed)
    barrier()  # several processes: rank 0's last checkpoint is complete before anyone looks for it
    if ckpt_path.exists():
        start_epoch, history = _resume(ckpt_path, net, opt, settings)
    resumed_from = start_epoch

    targets = torch.as_tensor(stats.normalise(train_set.params.astype(np.float32)), dtype=torch.float32)
    bar = _Bar(progress and w.is_main, epochs, steps_per_epoch, batch_size) if start_epoch < epochs else None
    val: NMEReport | None = None
    try:
        with sync_batch_norm(net) if w.size > 1 else _as_is(net), warnings.catch_warnings():
            # DDP notes 1x1 kernels whose gradient strides differ from its buckets' (the same memory order)
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            fast = _compiled(net) if hardware.compile else None  # after sync_batch_norm swapped the classes

            def forward_backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=hardware.bf16):
                    out = model(x)
                if out.dtype in (torch.bfloat16, torch.float16):  # the loss never runs in half precision
                    out = out.float()
                loss, parts = loss_fn(out, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                return loss, parts

            for epoch in range(start_epoch, epochs):
                t_epoch = time.perf_counter()
                if on_epoch_start is not None:
                    on_epoch_start(epoch, net)
                net.train()
                gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
                order = torch.randperm(len(train_set), generator=gen)[: steps_per_epoch * batch_size]
                sums = torch.zeros(3, dtype=torch.float64)
                if bar is not None:
                    bar.start_epoch(epoch)
                model = _data_parallel(net if fast is None else fast, w, dev, find_unused_parameters)
                for i, (x, y) in enumerate(_batches(train_set.images, targets, order, batch_size, w, transform, hardware)):
                    step = epoch * steps_per_epoch + i
                    cur_lr = _lr_at(step, total_steps, lr, warmup_steps, schedule)
                    for g in opt.param_groups:
                        g["lr"] = cur_lr * g.get("lr_scale", 1.0)
                    x = x.to(dev, non_blocking=hardware.pin_memory)
                    if hardware.channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    elif not nhwc_ok:  # the transform's batch is an NHWC array seen as NCHW: copy it to NCHW
                        x = x.contiguous()
                    y = y.to(dev, non_blocking=hardware.pin_memory)
                    if fast is None:
                        loss, parts = forward_backward(model, x, y)
                    else:
                        try:
                            with _buffers_kept(net):
                                loss, parts = forward_backward(model, x, y)
                        except Exception as exc:  # dynamo or inductor; the eager step raises again if it is not theirs
                            _log.warning("training.compile: torch.compile failed on this net, training eagerly (%s)", _first_line(exc))
                            fast = None
                            model = _data_parallel(net, w, dev, find_unused_parameters)
                            loss, parts = forward_backward(model, x, y)
                    opt.step()
                    sums += torch.tensor([loss.item(), parts["param"].item(), parts["landmark"].item()], dtype=torch.float64)
                    if bar is not None:
                        bar.step(sums[0].item() / (i + 1))
                del model  # drop DDP's gradient hooks before the next epoch's hook changes what learns
                all_reduce_(sums).div_(w.size)  # losses of the global batch: the mean of the processes' means
                if on_validation_start is not None:
                    on_validation_start(epoch, net)
                if w.is_main:  # only rank 0 validates, keeps the history and writes the checkpoint
                    val = evaluator(net) if evaluator is not None else None
                    if val is None:
                        val = evaluate(net, val_set, stats, val_batch_size, face_model, transform)
                    means = (sums / max(1, steps_per_epoch)).tolist()
                    history.append(
                        {
                            "epoch": epoch + 1,
                            "lr": cur_lr if steps_per_epoch else lr,
                            "loss": means[0],
                            "param_loss": means[1],
                            "landmark_loss": means[2],
                            "val_nme": val.mean,
                            "val_nme_mean_of_bins": val.mean_of_bins,
                            "val_bins": val.as_dict()["bins"],
                            "seconds": time.perf_counter() - t_epoch,
                        }
                    )
                    if bar is not None:
                        bar.end_epoch(val.mean)
                    _save(
                        ckpt_path,
                        {
                            "format": _FORMAT,
                            "settings": settings,
                            "epoch": epoch + 1,
                            "model": net.state_dict(),
                            "optimiser": opt.state_dict(),
                            "torch_rng": torch.get_rng_state(),
                            "history": history,
                        },
                    )
                barrier()  # the checkpoint is complete before any process moves on (or stops)
    finally:
        if bar is not None:
            bar.stop()

    if val is None and w.is_main:  # nothing trained in this call: evaluate the restored weights
        val = evaluate(net, val_set, stats, val_batch_size, face_model)
    return TrainResult(history, val, resumed_from, time.perf_counter() - t_start, ckpt_path)


def channels_last_safe(net: nn.Module, device: torch.device) -> bool:
    """Whether `net` may train on channels_last batches on `device`: not on a CPU when it has a strided
    1x1 convolution, whose backward pass (oneDNN's AVX-512 1x1 weight-gradient kernel, torch 2.13)
    crashed the process with a double free in that layout (ResNet-22's downsampling convolutions at
    4->8 and 8->16 channels, on an AVX-512 Xeon)."""
    if device.type != "cpu":
        return True
    return not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride != (1, 1) for m in net.modules())


@contextlib.contextmanager
def _as_is(net: nn.Module) -> Iterator[nn.Module]:
    yield net


def _compiled(net: nn.Module) -> nn.Module:
    """``torch.compile(net)`` (inductor, default mode): compiles at its first call, shares `net`'s parameters."""
    return cast(nn.Module, torch.compile(net))


@contextlib.contextmanager
def _buffers_kept(net: nn.Module) -> Iterator[None]:
    """Within the block, `net`'s buffers as they were at its start if it raises."""
    saved = [(b, b.detach().clone()) for b in net.buffers()]
    try:
        yield
    except BaseException:
        with torch.no_grad():
            for b, v in saved:
                b.copy_(v)
        raise


def _first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` of `exc`."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _data_parallel(net: nn.Module, w: World, dev: torch.device, find_unused: bool) -> nn.Module:
    """`net` itself in one process; else a DistributedDataParallel over it (which starts by copying
    rank 0's parameters and buffers to every process)."""
    if w.size == 1:
        return net
    from torch.nn.parallel import DistributedDataParallel

    with warnings.catch_warnings():  # epochs that do use every parameter are no reason to warn
        warnings.filterwarnings("ignore", message=".*find_unused_parameters=True.*")
        return DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None, find_unused_parameters=find_unused)


class _StepBatches(torch.utils.data.Dataset):
    """Item ``i``: this process's share of global batch ``i`` of an epoch's order, as (inputs, targets)."""

    def __init__(self, images: Images, targets: torch.Tensor, order: torch.Tensor, batch_size: int, w: World, transform: InputTransform):
        self.images, self.targets, self.order, self.batch_size, self.w, self.transform = images, targets, order, batch_size, w, transform

    def __len__(self) -> int:
        return len(self.order) // self.batch_size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.order[i * self.batch_size : (i + 1) * self.batch_size][self.w.rank :: self.w.size]
        return self.transform(self.images[idx.numpy()]), self.targets[idx]


def _batches(
    images: Images, targets: torch.Tensor, order: torch.Tensor, batch_size: int, w: World, transform: InputTransform, hw: Hardware
) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    steps = _StepBatches(images, targets, order, batch_size, w, transform)
    if hw.workers == 0 and not hw.pin_memory:
        return (steps[i] for i in range(len(steps)))
    return torch.utils.data.DataLoader(steps, batch_size=None, num_workers=hw.workers, pin_memory=hw.pin_memory)


def _save(path: Path, state: dict[str, Any]) -> None:
    atomic.save_torch(path, state)


def _resume(path: Path, net: nn.Module, opt: torch.optim.Optimizer, settings: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    try:
        state = torch.load(path, map_location=_device(net), weights_only=True)
    except Exception as exc:  # a torn or foreign file: say which, keep the traceback chained
        raise CheckpointError(f"cannot read checkpoint: {exc}", where=str(path)) from exc
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise CheckpointError(f"not a {_FORMAT} checkpoint", where=str(path))
    if state["settings"] != settings:
        diff = sorted(k for k in settings if state["settings"].get(k) != settings[k])
        raise CheckpointError(
            f"checkpoint was written with other training settings ({', '.join(diff)}); delete it to start again",
            where=str(path),
        )
    missing, unexpected = net.load_state_dict(state["model"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint does not fit the network: missing {missing}, unexpected {unexpected}", where=str(path))
    opt.load_state_dict(state["optimiser"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["epoch"]), list(state["history"])


class _Bar:
    """A rich progress bar over all steps: epoch, step count, images/s, ETA, running loss, last val NME."""

    def __init__(self, enabled: bool, epochs: int, steps: int, batch_size: int) -> None:
        self.enabled = enabled
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.epochs, self.steps, self.batch_size = epochs, steps, batch_size
        self.progress = Progress(
            TextColumn("train epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>5.0f} img/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  val NME {task.fields[nme]}"),
        )
        self.task = self.progress.add_task("train", total=epochs * steps, epoch=0, epochs=epochs, rate=0.0, loss=float("nan"), nme="-")
        self.progress.start()
        self.t0 = time.perf_counter()
        self.done = 0

    def start_epoch(self, epoch: int) -> None:
        if self.enabled:
            self.progress.update(self.task, completed=epoch * self.steps, epoch=epoch + 1)
            self.t0, self.done = time.perf_counter(), 0

    def step(self, loss: float) -> None:
        if self.enabled:
            self.done += 1
            rate = self.done * self.batch_size / max(1e-9, time.perf_counter() - self.t0)
            self.progress.update(self.task, advance=1, loss=loss, rate=rate)

    def end_epoch(self, nme: float) -> None:
        if self.enabled:
            self.progress.update(self.task, nme=f"{100 * nme:.2f}%")

    def stop(self) -> None:
        if self.enabled:
            self.progress.stop()
