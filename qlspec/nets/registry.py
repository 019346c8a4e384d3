"""The network registry: one entry per architecture, the only place stages get a network from.

An entry says how to build the architecture (a class taking ``width`` and ``num_params``, imported
only when a network is built, so reading a spec never imports torch), which checkpoint layout it
imports, and its documented sizes. The spec's ``network`` section is a union on ``arch`` of the
models in `qlspec.spec.models` whose ``arch`` values are this registry's keys (a test keeps the two
in step), and ``network.json``, written by the train and quantise stages, is read back through it.

Adding a network: its module in `qlspec/nets/` (the PyTorch module), one entry here, its spec model
(a member of `qlspec.spec.models.Network`) and a fragment in `specs/networks/`.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

NUM_PARAMS = 62  # 3DDFA: 12 pose + 40 shape + 10 expression


@dataclass(frozen=True)
class NetworkEntry:
    """One architecture: `builder` is ``"module:Class"`` taking ``(width, num_params)``."""

    arch: str
    summary: str
    builder: str
    checkpoint_layout: str
    sizes: str  # parameter counts and MACs at 120x120, as documented (and tested)

    def cls(self) -> type:
        module, _, name = self.builder.partition(":")
        return getattr(importlib.import_module(module), name)


NETWORKS: dict[str, NetworkEntry] = {
    e.arch: e
    for e in (
        NetworkEntry(
            "3ddfa-mobilenet-v1",
            "3DDFA_V2's MobileNet-V1 regressor (depthwise-separable, no residuals)",
            "qlspec.nets.mobilenet_v1:MobileNetV1",
            "3DDFA_V2 mb1_120x120.pth / mb05_120x120.pth",
            "3,270,526 parameters, 177 M MACs at width 1.0; 850,398 and 47 M at 0.5",
        ),
        NetworkEntry(
            "3ddfa-resnet22",
            "3DDFA_V2's ResNet-22 regressor (BasicBlocks with residual adds)",
            "qlspec.nets.resnet22:ResNet22",
            "3DDFA_V2 resnet22.pth",
            "18,449,246 parameters, 2.66 G MACs at width 1.0; 293,570 and 43 M at 0.125",
        ),
    )
}


def entry(arch: str) -> NetworkEntry:
    try:
        return NETWORKS[arch]
    except KeyError:
        raise ValueError(f"unknown network arch {arch!r} (known: {', '.join(NETWORKS)})") from None


def build(arch: str, width: float, num_params: int = NUM_PARAMS) -> nn.Module:
    """A freshly initialised float network (draws from the global torch RNG: seed it first)."""
    return entry(arch).cls()(width=width, num_params=num_params)


def build_from_spec(network: Any, *, load_pretrained: bool = True) -> nn.Module:
    """The spec's network (``network.arch``, ``network.width``), with ``network.pretrained`` loaded."""
    net = build(network.arch, network.width)
    if load_pretrained and network.pretrained is not None:
        from qlspec.nets.checkpoint import load_3ddfa_checkpoint

        load_3ddfa_checkpoint(net, network.pretrained)
    return net


def write_record(network: Any, size: int, folder: Path) -> None:
    """``folder/network.json``: enough to rebuild the architecture (arch, width, outputs, input shape)."""
    rec = {"arch": network.arch, "width": network.width, "num_params": NUM_PARAMS, "input_shape": [3, size, size]}
    (folder / "network.json").write_text(json.dumps(rec) + "\n")


def read_record(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "network.json").read_text())


def build_from_record(folder: Path) -> nn.Module:
    """The architecture a stage recorded in ``folder/network.json`` (weights not loaded)."""
    rec = read_record(folder)
    return build(rec["arch"], rec["width"], rec.get("num_params", NUM_PARAMS))
