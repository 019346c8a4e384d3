"""Versioned serialisation: a folder with graph.json (structure, types, attributes) and
constants.npz (the integer constants). `load_graph(save_graph(g, d))` equals `g` exactly.

graph.json::

    {"format": "qlspec-graph", "format_version": 1, "ir_version": 1, "name": ...,
     "inputs":  [{"name", "shape", "bits", "signed", "float"}],
     "outputs": [name, ...],
     "constants": [{"name", "key"}],          # key of the array in constants.npz
     "nodes": [{"name", "op", "inputs", "outputs", "attrs"}],
     "tensors": {name: {"shape", "bits", "signed", "float"}}}   # every tensor's type, re-checked on load

Constants live under neutral keys (c0, c1, ...) because tensor names may hold any character.
Both files are written to temporary names and renamed into place, so a failure never leaves a
half-written graph.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from qlspec import atomic
from qlspec.errors import GraphError
from qlspec.graph.ir import IR_VERSION, Graph, Node, TensorInfo, make_graph

FORMAT = "qlspec-graph"
FORMAT_VERSION = 1
GRAPH_FILE = "graph.json"
CONSTANTS_FILE = "constants.npz"


def _info_json(info: TensorInfo) -> dict:
    return {"shape": list(info.shape), "bits": info.bits, "signed": info.signed, "float": info.is_float}


def _info_from(d: dict) -> TensorInfo:
    return TensorInfo(tuple(d["shape"]), int(d["bits"]), bool(d["signed"]), bool(d.get("float", False)))


def _attr_json(v):
    return [_attr_json(x) for x in v] if isinstance(v, tuple) else v


def save_graph(g: Graph, directory: Path) -> Path:
    """Write `g` into `directory` (created if needed); returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    keys = {name: f"c{i}" for i, name in enumerate(g.constants)}
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ir_version": g.ir_version,
        "name": g.name,
        "inputs": [{"name": t, **_info_json(g.tensors[t])} for t in g.inputs],
        "outputs": list(g.outputs),
        "constants": [{"name": name, "key": key} for name, key in keys.items()],
        "nodes": [
            {
                "name": n.name,
                "op": n.op,
                "inputs": list(n.inputs),
                "outputs": list(n.outputs),
                "attrs": {k: _attr_json(v) for k, v in n.attrs},
            }
            for n in g.nodes
        ],
        "tensors": {t: _info_json(i) for t, i in g.tensors.items()},
    }
    atomic.save_npz(directory / CONSTANTS_FILE, **{keys[name]: a for name, a in g.constants.items()})
    atomic.write_json(directory / GRAPH_FILE, doc, indent=1)  # last: a folder with graph.json is complete
    return directory


def load_graph(directory: Path) -> Graph:
    """Read a graph written by `save_graph`; a missing, corrupt or newer-format folder is a `GraphError`."""
    directory = Path(directory)
    gj, cz = directory / GRAPH_FILE, directory / CONSTANTS_FILE
    if not gj.is_file() or not cz.is_file():
        raise GraphError(f"not a qlspec graph folder (needs {GRAPH_FILE} and {CONSTANTS_FILE})", where=str(directory))
    try:
        doc = json.loads(gj.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GraphError(f"unreadable graph file ({e})", where=str(gj)) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise GraphError(f"not a qlspec graph (format is not {FORMAT!r})", where=str(gj))
    version = doc.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise GraphError(f"format_version {version!r} is newer than this qlspec reads ({FORMAT_VERSION})", where=str(gj))
    if doc.get("ir_version") != IR_VERSION:
        raise GraphError(f"ir_version {doc.get('ir_version')!r} differs from this qlspec's ({IR_VERSION})", where=str(gj))
    try:
        with np.load(cz, allow_pickle=False) as z:
            consts = {c["name"]: z[c["key"]] for c in doc["constants"]}
        inputs = {d["name"]: _info_from(d) for d in doc["inputs"]}
        nodes = [Node.make(d["op"], d["name"], d["inputs"], d["outputs"], **d["attrs"]) for d in doc["nodes"]]
        stored = {t: _info_from(d) for t, d in doc["tensors"].items()}
        outputs = list(doc["outputs"])
        name = str(doc["name"])
        g = make_graph(name, inputs, nodes, consts, outputs)
    except GraphError as e:
        raise GraphError(e.message, where=f"{directory}: {e.where}" if e.where else str(directory)) from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError, OSError, zipfile.BadZipFile) as e:
        raise GraphError(f"corrupt graph folder ({type(e).__name__}: {str(e)[:120]})", where=str(directory)) from None
    if dict(g.tensors) != stored:
        bad = sorted(t for t in set(stored) | set(g.tensors) if stored.get(t) != g.tensors.get(t))
        raise GraphError(f"stored tensor types disagree with this qlspec's ops for {bad[:5]}", where=str(gj))
    return g
