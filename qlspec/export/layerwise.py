"""TQ against FQ one requantiser at a time: where the integer graph first departs from the fake network.

End to end, one requantiser that lands a level away from FQ (an input a hair from a level boundary,
computed with a multiplier rounded to 2^-D) moves every output it reaches; before the last linear
layer a single flipped pooled feature moves an output by a whole weight. Feeding each requantiser of
F2T's graph FQ's own input codes separates the two: the per-layer difference is what F2T's
arithmetic promises (at most 1 LSB), the end-to-end one is that difference propagated.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from qlspec.engine.ops import op_for
from qlspec.export.f2t import INPUT, Integerised, _module_call
from qlspec.quant.pact import _PACTActivation


@torch.no_grad()
def fq_codes(fq: nn.Module, net: Integerised, x: Tensor) -> tuple[dict[str, np.ndarray], Tensor]:
    """FQ's integer codes (output / eps, int64) at every activation quantiser F2T made a
    RequantShift, by graph tensor name, and FQ's output."""
    wanted: dict[str, dict[int, str]] = {}
    for n in net.graph.nodes:
        if n.op == "RequantShift":
            module, call = _module_call(net.sources[n.name])
            wanted.setdefault(module, {})[call] = n.outputs[0]
    got, hooks = {}, []
    for module, calls in wanted.items():
        m = fq.get_submodule(module)
        assert isinstance(m, _PACTActivation)  # F2T makes a RequantShift from an activation quantiser
        eps, seen = float(m.get_eps()), [0]

        def hook(mod, i, o, calls=calls, eps=eps, seen=seen):
            t = calls.get(seen[0])
            seen[0] += 1
            if t is not None:
                got[t] = torch.round(o.double() / eps).long().numpy()

        hooks.append(m.register_forward_hook(hook))
    try:
        y = fq(x)
    finally:
        for h in hooks:
            h.remove()
    return got, y


def layerwise_diffs(fq: nn.Module, net: Integerised, x: Tensor) -> dict[str, np.ndarray]:
    """{quantiser: TQ codes - FQ codes} where each requantiser of the graph gets FQ's own input codes."""
    codes, _ = fq_codes(fq, net, x)
    g = net.graph
    env = {**g.constants, INPUT: net.quantise_input(x), **codes}
    diffs = {}
    for n in g.nodes:
        if n.op == "Quantise":
            continue
        y = np.asarray(op_for(n).run(*(env[t] if t else None for t in n.inputs)))
        if n.op == "RequantShift":
            diffs[net.sources[n.name]] = y.astype(np.int64) - codes[n.outputs[0]]
        else:
            env.setdefault(n.outputs[0], y)
    return diffs


def layerwise_summary(fq: nn.Module, net: Integerised, x: Tensor, batch: int = 32) -> dict[str, float | int]:
    """Requantised values compared, how many differ, their rate and the largest difference in LSB."""
    total = flips = worst = 0
    for s in range(0, len(x), batch):
        for d in layerwise_diffs(fq, net, x[s : s + batch]).values():
            total += d.size
            flips += int((d != 0).sum())
            worst = max(worst, int(np.abs(d).max(initial=0)))
    return {"values": total, "differing": flips, "rate": flips / max(total, 1), "max_lsb": worst}
