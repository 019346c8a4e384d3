"""Run a qlspec graph with the reference ops: the oracle every backend must equal bit for bit."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from qlspec.engine.ops import Op, op_for
from qlspec.errors import GraphError
from qlspec.graph.ir import Graph, Node, TensorInfo

Observer = Callable[[Node, Sequence[np.ndarray | None], np.ndarray], None]


def _check_input(name: str, info: TensorInfo, value: object, batch_free: bool) -> np.ndarray:
    a = np.asarray(value)
    where = f"input {name}"
    if info.is_float:
        if a.dtype.kind not in "fiu":
            raise GraphError(f"expected numbers, got dtype {a.dtype}", where=where)
        a = a.astype(np.float32)
    else:
        if a.dtype.kind == "f":
            if not np.all(np.isfinite(a)) or not np.array_equal(a, np.round(a)):
                raise GraphError("expected integers, got non-integer floats", where=where)
            a = a.astype(np.int64)
        elif a.dtype.kind not in "iub":
            raise GraphError(f"expected an integer array, got dtype {a.dtype}", where=where)
        if a.size and (int(a.min()) < info.lo or int(a.max()) > info.hi):
            raise GraphError(
                f"values [{a.min()}, {a.max()}] outside the declared {info.describe()} range [{info.lo}, {info.hi}]", where=where
            )
        a = a.astype(info.dtype)
    shape_ok = a.shape == info.shape or (batch_free and a.ndim == len(info.shape) and a.shape[1:] == info.shape[1:])
    if not shape_ok:
        raise GraphError(
            f"shape {a.shape} does not match the declared {info.shape}"
            + ("" if batch_free else " (this graph mixes the batch axis, so it is fixed)"),
            where=where,
        )
    return a


def _fills(info: TensorInfo, dtype: np.dtype) -> bool:
    """True when `info`'s range covers every value of integer `dtype`: then no value can lie outside it."""
    return dtype.kind in "iu" and info.lo <= int(np.iinfo(dtype).min) and int(np.iinfo(dtype).max) <= info.hi


def check_inputs(g: Graph, inputs: Mapping[str, np.ndarray], ops: Sequence[Op] | None = None) -> dict[str, np.ndarray]:
    """`inputs` as `g` takes them, in their containers: every input present, integer values within
    the declared range (float only for a `Quantise` input), the declared shape (axis 0 free when every
    op is batch-independent). What every executor of the graph accepts; GraphError otherwise."""
    missing = [t for t in g.inputs if t not in inputs]
    if missing:
        raise GraphError(f"missing input(s) {missing}; the graph takes {list(g.inputs)}")
    batch_free = all(op.batch_free() for op in (ops if ops is not None else [op_for(n) for n in g.nodes]))
    return {t: _check_input(t, g.tensors[t], inputs[t], batch_free) for t in g.inputs}


def run_graph(
    g: Graph, inputs: Mapping[str, np.ndarray], *, keep_intermediates: bool = False, observe: Observer | None = None
) -> dict[str, np.ndarray]:
    """Execute `g` on integer `inputs` (by input name) and return its outputs by name.

    Inputs are checked against their declared types (integer values in range; float inputs only
    for a leading `Quantise`) and may differ from the declared shape on axis 0 when every op is
    batch-independent. Each node's result is checked to lie in its declared type's range (so an
    accumulator overflow is an error, never a silent wrap) and stored in that type's container.
    With `keep_intermediates`, every activation tensor is returned, graph inputs included. Returned
    arrays are C-contiguous (inside, an op may hand the next one a differently strided view).
    `observe(node, inputs, result)` is called after each node (to collect statistics without keeping
    every tensor).
    """
    ops = [op_for(n) for n in g.nodes]
    env: dict[str, np.ndarray] = dict(g.constants)
    env.update(check_inputs(g, inputs, ops))
    last_use: dict[str, int] = {}
    for i, n in enumerate(g.nodes):
        for t in n.inputs:
            last_use[t] = i
    keep = set(g.outputs) | set(g.constants)
    for i, (node, op) in enumerate(zip(g.nodes, ops)):
        args = [env[t] if t else None for t in node.inputs]
        y = np.asarray(op.run(*args))
        (out,) = node.outputs
        info = g.tensors[out]
        if y.size and not info.is_float and not _fills(info, y.dtype) and (int(y.min()) < info.lo or int(y.max()) > info.hi):
            raise GraphError(
                f"result [{y.min()}, {y.max()}] outside its type {info.describe()} [{info.lo}, {info.hi}] (accumulator overflow?)",
                where=node.where(),
            )
        env[out] = y.astype(info.dtype, copy=False)
        if observe is not None:
            observe(node, args, env[out])
        if not keep_intermediates:
            for t in node.inputs:
                if t and last_use.get(t) == i and t not in keep:
                    del env[t]
    if keep_intermediates:
        return {t: np.ascontiguousarray(env[t]) for t in g.activations()}
    return {t: np.ascontiguousarray(env[t]) for t in g.outputs}
