"""The reference integer engine: numpy, integer dtypes, the exact semantics of each IR op."""

from qlspec.engine.run import run_graph

__all__ = ["run_graph"]
