"""The qlspec graph (LPDNN-style IR): types, serialisation, summary, memory plan and passes."""

from qlspec.graph.ir import IR_VERSION, Graph, GraphBuilder, Node, TensorInfo, make_graph

__all__ = ["IR_VERSION", "Graph", "GraphBuilder", "Node", "TensorInfo", "make_graph"]
