"""Fold BatchNorm into the convolution (or linear) before it, for post-training quantisation.

For ``y = BN(conv(x))`` in inference mode, with ``s = gamma / sqrt(running_var + bn.eps)``:

    W' = W * s[:, None, None, None]          b' = (b - running_mean) * s + beta      (b = 0 if absent)

so ``conv'(x) == BN(conv(x))`` exactly in real arithmetic and up to float32 rounding in practice.
This is only valid with BN's running statistics (``eval()``), which is how PTQ and deployment run.
PACT QAT does not fold: BN stays in the fake-quantised net and F2T folds it into the requantiser.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

_FOLDABLE = ((nn.Conv2d, nn.BatchNorm2d), (nn.Linear, nn.BatchNorm1d))


@torch.no_grad()
def fold_bn_into(layer: nn.Conv2d | nn.Linear, bn: nn.BatchNorm2d | nn.BatchNorm1d) -> None:
    """Fold `bn` into `layer` in place (the layer gains a bias if it had none)."""
    if not bn.track_running_stats or bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    if layer.weight.shape[0] != bn.num_features:
        raise ValueError(f"BatchNorm has {bn.num_features} features but the layer has {layer.weight.shape[0]} outputs")
    gamma = bn.weight if bn.affine else torch.ones_like(bn.running_mean)
    beta = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    s = gamma / torch.sqrt(bn.running_var + bn.eps)
    w = layer.weight
    w.mul_(s.reshape((-1,) + (1,) * (w.dim() - 1)))
    b = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = (b - bn.running_mean) * s + beta
    if layer.bias is None:
        layer.bias = nn.Parameter(new_bias.to(w.dtype))
    else:
        layer.bias.copy_(new_bias)


def fold_batchnorm(net: nn.Module, inplace: bool = False) -> fx.GraphModule:
    """Return `net` as a GraphModule with every BN that directly follows a conv/linear folded into it.

    A pair is folded when the BN's only input is the output of a Conv2d (Linear for BatchNorm1d)
    that nothing else uses and that is called once; the BN node and module are removed. Other
    BatchNorms stay. Submodule names are kept. `net` is left untouched unless `inplace`.
    """
    gm = net if isinstance(net, fx.GraphModule) else fx.symbolic_trace(net if inplace else copy.deepcopy(net))
    if isinstance(net, fx.GraphModule) and not inplace:
        gm = copy.deepcopy(gm)
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        bn = gm.get_submodule(node.target)
        prev = node.args[0] if node.args else None
        if not isinstance(prev, fx.Node) or prev.op != "call_module" or len(prev.users) != 1:
            continue
        assert isinstance(prev.target, str)  # a call_module node's target is the module's qualified name
        layer = gm.get_submodule(prev.target)
        if not any(type(bn) is b and isinstance(layer, kind) for kind, b in _FOLDABLE):
            continue
        if calls[prev.target] != 1 or calls[node.target] != 1:
            continue
        assert isinstance(layer, (nn.Conv2d, nn.Linear)) and isinstance(bn, (nn.BatchNorm2d, nn.BatchNorm1d))  # a _FOLDABLE pair
        fold_bn_into(layer, bn)
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
        gm.delete_submodule(node.target)
    gm.graph.lint()
    gm.recompile()
    return gm
