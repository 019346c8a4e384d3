"""Import 3DDFA_V2 checkpoints (``mb1_120x120.pth``, ``mb05_120x120.pth``, ``resnet22.pth``) into our networks.

The released files are ``{'epoch': int, 'state_dict': {...}}`` (legacy torch serialisation) whose
keys carry DataParallel's ``module.`` prefix, the 62-parameter head as ``fc_param`` and a training-only
136-landmark head ``fc_lm``. 3DDFA_V2's own ``load_model`` strips ``module.``, renames ``fc_param`` to
``fc`` and drops ``fc_lm``; this does the same, then insists on an exact match of keys and shapes.
Loaded with ``torch.load(weights_only=True)``: no pickled code runs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from qlspec.errors import CheckpointError

DROPPED_PREFIXES = ("fc_lm.", "conv_lm.")  # training-only landmark heads (MobileNet, ResNet)
RENAMED_PREFIXES = {"fc_param.": "fc."}


def read_3ddfa_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under our names (``module.`` stripped, ``fc_param`` -> ``fc``, no ``fc_lm``)."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError("file not found", where=str(path)) from None
    except Exception as e:
        # on a torn or crafted file (KeyError, IndexError, MemoryError, ...) means "not a checkpoint"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise CheckpointError(f"not a readable torch checkpoint ({reason[:160]})", where=str(path)) from None
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError("expected a state dict, or a dict with a 'state_dict' entry, of tensors", where=str(path))
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith(DROPPED_PREFIXES):
            continue
        for old, new in RENAMED_PREFIXES.items():
            if key.startswith(old):
                key = new + key[len(old) :]
        out[key] = value
    return out


def load_3ddfa_checkpoint(net: nn.Module, path: Path) -> None:
    """Load a 3DDFA_V2 checkpoint into `net` (`fitting_state_dict` says why one does not fit)."""
    net.load_state_dict({**net.state_dict(), **fitting_state_dict(net, path)})


def fitting_state_dict(net: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, checked to fit `net`: raise `CheckpointError` naming missing, unexpected
    or mis-shaped keys (a width mismatch shows up as shapes). BN's ``num_batches_tracked`` may be absent.
    The one check behind both the train stage and `qlspec validate`."""
    state = read_3ddfa_state_dict(path)
    own = net.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches (file vs network)", shapes)):
        if items:
            shown = ", ".join(items[:4]) + (f", ... ({len(items)} in all)" if len(items) > 4 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise CheckpointError("does not fit the network: " + "; ".join(problems), where=str(path))
    return state
