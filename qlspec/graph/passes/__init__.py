"""Graph passes (QONNX-style: pure `apply(graph) -> (graph, changed)`, one per module) and the
default pipeline `optimise`."""

from __future__ import annotations

from qlspec.graph.ir import Graph
from qlspec.graph.passes.base import Pass, run_to_fixed_point
from qlspec.graph.passes.eliminate_dead_nodes import EliminateDeadNodes
from qlspec.graph.passes.fold_clip_into_requant import FoldClipIntoRequant
from qlspec.graph.passes.fold_constants import FoldConstants
from qlspec.graph.passes.fuse_requant_into_linear import FuseRequantIntoLinear
from qlspec.graph.passes.remove_identity_requant import RemoveIdentityRequant

DEFAULT_PIPELINE: tuple[Pass, ...] = (
    FoldConstants(),
    FoldClipIntoRequant(),
    RemoveIdentityRequant(),
    FuseRequantIntoLinear(),
    EliminateDeadNodes(),
)


def optimise(g: Graph) -> Graph:
    """The default pipeline, run to a fixed point. The result computes exactly what `g` computes."""
    return run_to_fixed_point(g, DEFAULT_PIPELINE)


__all__ = [
    "DEFAULT_PIPELINE",
    "EliminateDeadNodes",
    "FoldClipIntoRequant",
    "FoldConstants",
    "FuseRequantIntoLinear",
    "Pass",
    "RemoveIdentityRequant",
    "optimise",
    "run_to_fixed_point",
]
