"""TQ against FQ one requantiser at a time: where the integer network first departs from the fake one.

End to end, one requantiser that lands a level away from FQ (an input a hair from a level boundary,
computed with a multiplier rounded to 2^-D) moves every output it reaches; before the last linear
layer a single flipped pooled feature moves an output by a whole weight. Feeding each TQ requantiser
FQ's own input codes separates the two: the per-layer difference is what F2T's arithmetic promises
(at most 1 LSB), the end-to-end one is that difference propagated.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from qlspec.export.integer_net import IntegerNet


@torch.no_grad()
def fq_codes(fq: nn.Module, inet: IntegerNet, x: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    """FQ's integer codes (output / eps) at every quantiser F2T made a RequantShift, by IntegerNet
    tensor name, and FQ's output."""
    got, hooks = {}, []
    for layer in inet.layers:
        if layer.op == "RequantShift":
            m = fq.get_submodule(layer.source)
            eps = float(m.get_eps())
            hooks.append(m.register_forward_hook(
                lambda mod, i, o, n=layer.output.name, e=eps: got.__setitem__(n, torch.round(o.double() / e).long())))
    try:
        y = fq(x)
    finally:
        for h in hooks:
            h.remove()
    return got, y


@torch.no_grad()
def layerwise_diffs(fq: nn.Module, inet: IntegerNet, x: Tensor) -> dict[str, Tensor]:
    """{quantiser: TQ codes - FQ codes} where each TQ requantiser gets FQ's own input codes."""
    codes, _ = fq_codes(fq, inet, x)
    env = {inet.input.name: inet.quantise_input(x).double(), **{k: v.double() for k, v in codes.items()}}
    diffs = {}
    for layer, m in zip(inet.layers, inet.module().layers):
        y = m(env[layer.input])
        if layer.op == "RequantShift":
            diffs[layer.source] = y.long() - codes[layer.output.name]
        else:
            env.setdefault(layer.output.name, y)
    return diffs


def layerwise_summary(fq: nn.Module, inet: IntegerNet, x: Tensor, batch: int = 32) -> dict[str, float | int]:
    """Requantised values compared, how many differ, their rate and the largest difference in LSB."""
    total = flips = worst = 0
    for s in range(0, len(x), batch):
        for d in layerwise_diffs(fq, inet, x[s:s + batch]).values():
            total += d.numel()
            flips += int((d != 0).sum())
            worst = max(worst, int(d.abs().max()))
    return {"values": total, "differing": flips, "rate": flips / max(total, 1), "max_lsb": worst}
