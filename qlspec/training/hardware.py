"""Where training runs and how batches reach it: device, bf16 autocast and channels_last, torch.compile, batch loading.

These settings change speed (and floating-point rounding noise), never what is trained, so none of
them is part of a stage key (`qlspec.spec.effects`). Rules:

- ``device``: ``'cuda'`` needs a GPU torch can see (else a `QlspecError`); ``'auto'`` takes CUDA when
  ``torch.cuda.is_available()``. With several processes on a node, process ``local_rank`` uses
  ``cuda:<local_rank>``.
- Float phase on CUDA with ``precision: auto``: the forward pass runs under bf16 autocast where the
  GPU supports bf16 (the loss, which turns parameters into landmarks, stays float32) and images and
  weights are channels_last. QAT never autocasts: its quantisers compute bounds, eps and codes in
  float32, and a bf16 eps would move codes. On CPU both stay off.
- ``pin_memory`` only means something on CUDA; ``'auto'`` pins there.
- ``compile``: the trainer runs its training steps (forward and backward; float phase and QAT alike)
  through ``torch.compile`` of the net, on any device; validation and checkpoints use the net itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from qlspec.errors import QlspecError

__all__ = ["Hardware", "resolve_device"]


def resolve_device(name: Literal["auto", "cpu", "cuda"], local_rank: int = 0) -> torch.device:
    """The torch device the spec's ``training.device`` names for the process with `local_rank` on its node."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise QlspecError("training.device is 'cuda' but torch sees no GPU (use 'auto' or 'cpu')", where="training.device")
    if local_rank >= torch.cuda.device_count():
        raise QlspecError(
            f"process {local_rank} on this node has no GPU of its own ({torch.cuda.device_count()} visible): "
            "lower training.distributed.processes",
            where="training.distributed.processes",
        )
    return torch.device("cuda", local_rank)


@dataclass(frozen=True)
class Hardware:
    """How `qlspec.training.trainer.train` runs (module docstring).

    Attributes:
        device: where the net, batches and loss live; None: wherever the net already is.
        bf16: forward pass under bf16 autocast (CUDA only).
        channels_last: images and weights in channels_last memory format (CUDA only).
        workers: DataLoader worker processes preparing batches; 0: in the training process.
        pin_memory: page-locked batches for asynchronous copies to the GPU.
        compile: training steps through ``torch.compile`` (`qlspec.training.trainer`: eager after a failure).
    """

    device: torch.device | None = None
    bf16: bool = False
    channels_last: bool = False
    workers: int = 0
    pin_memory: bool = False
    compile: bool = False

    @classmethod
    def from_spec(cls, training: Any, phase: Literal["float", "qat"], local_rank: int = 0) -> Hardware:
        """The settings of the spec's ``training`` section for `phase` (float training or QAT)."""
        dev = resolve_device(training.device, local_rank)
        cuda = dev.type == "cuda"
        fast_float = cuda and phase == "float" and training.precision == "auto"
        pin = training.loader.pin_memory
        return cls(
            device=dev,
            bf16=fast_float and torch.cuda.is_bf16_supported(),
            channels_last=fast_float,
            workers=training.loader.workers,
            pin_memory=cuda and (pin is True or pin == "auto"),
            compile=training.compile,
        )
