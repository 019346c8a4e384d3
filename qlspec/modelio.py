"""What `qlspec convert` and `qlspec infer` read and write: models (graph folder or .onnx),
input .npz files and output .npz files."""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx

from qlspec import atomic
from qlspec.errors import GraphError
from qlspec.graph.io import GRAPH_FILE, load_graph
from qlspec.graph.ir import Graph
from qlspec.graph.passes import optimise
from qlspec.onnx_import import import_onnx


def load_model(path: Path, input_types: Mapping[str, tuple[int, bool]] | None = None) -> Graph:
    """A graph folder written by `save_graph`, or an .onnx file (imported, then optimised).

    The input precision of an .onnx file is `input_types` ({name: (bits, signed)}), else what a side
    JSON beside it declares (`side_input_types`), else the importer's default (32-bit signed).
    """
    path = Path(path)
    if path.is_dir():
        return load_graph(path)
    if path.suffix.lower() == ".onnx" or (path.is_file() and not (path.parent / GRAPH_FILE).exists()):
        return optimise(import_onnx(path, input_types=input_types or side_input_types(path)))
    raise GraphError(f"expected a graph folder (with {GRAPH_FILE}) or an .onnx file", where=str(path))


def side_input_types(onnx_path: Path) -> dict[str, tuple[int, bool]] | None:
    """Input precision declared next to an ONNX file, which the graph itself does not carry.

    Read from qlspec's export metadata.json (``input: {name, bits, signed}``), or from a QuantLab DORY
    side JSON (``config_*.json`` with ``input_bits`` and ``input_signed``, for the graph's first
    input). None when neither is there.
    """
    folder = Path(onnx_path).parent
    meta = folder / "metadata.json"
    if meta.is_file():
        data = _json(meta).get("input", {})
        if isinstance(data, dict) and {"name", "bits", "signed"} <= set(data):
            if not isinstance(data["name"], str):
                raise GraphError(f"input.name must be a string (got {data['name']!r:.40})", where=str(meta))
            return {data["name"]: (_bits(data["bits"], meta, "input.bits"), _flag(data["signed"], meta, "input.signed"))}
    for config in sorted(folder.glob("config_*.json")):
        data = _json(config)
        if "input_bits" in data and "input_signed" in data:
            return {first_input(onnx_path): (_bits(data["input_bits"], config, "input_bits"),
                                             _flag(data["input_signed"], config, "input_signed"))}
    return None


def _bits(value: object, path: Path, key: str) -> int:
    whole = (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and math.isfinite(value)
                                                                        and value.is_integer())
    if not whole or not 1 <= int(value) <= 64:
        raise GraphError(f"{key} must be an integer in 1..64 (got {value!r:.40})", where=str(path))
    return int(value)


def _flag(value: object, path: Path, key: str) -> bool:
    if not isinstance(value, (bool, int)) or value not in (0, 1):
        raise GraphError(f"{key} must be true or false (got {value!r:.40})", where=str(path))
    return bool(value)


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:  # ValueError covers JSONDecodeError
        raise GraphError(f"unreadable side JSON ({e.__class__.__name__})", where=str(path)) from None
    return data if isinstance(data, dict) else {}


def first_input(onnx_path: Path) -> str:
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initialisers = {t.name for t in graph.initializer}
    return next(i.name for i in graph.input if i.name not in initialisers)


def read_inputs(npz_path: Path, g: Graph) -> dict[str, np.ndarray]:
    """The arrays of an .npz for `g`'s inputs: by name when every input name is a key, else by
    order (the n first arrays for the n inputs; the shared QuantLab/Deeploy cases name them
    arr_0, arr_1, ... or input_0, ..., and kernel tests store extra arrays, such as the weights,
    after the inputs, which are ignored). Values are checked by `run_graph`."""
    npz_path = Path(npz_path)
    try:
        z = np.load(npz_path, allow_pickle=False)
    except FileNotFoundError:
        raise GraphError("no such file", where=str(npz_path)) from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # EOFError: an empty file
        raise GraphError(f"not a readable .npz file ({e.__class__.__name__}: {str(e)[:80]})", where=str(npz_path)) from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise GraphError("an .npy array, not an .npz of named inputs (save it with np.savez)", where=str(npz_path))
    try:
        with z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise GraphError(f"not a readable .npz file ({e.__class__.__name__}: {str(e)[:80]})", where=str(npz_path)) from None
    if all(t in arrays for t in g.inputs):
        return {t: arrays[t] for t in g.inputs}
    if len(arrays) < len(g.inputs):
        raise GraphError(f"holds {len(arrays)} array(s) {list(arrays)} but the graph takes {len(g.inputs)} "
                         f"input(s) {list(g.inputs)}", where=str(npz_path))
    return dict(zip(g.inputs, arrays.values()))


def write_outputs(path: Path, outputs: Mapping[str, np.ndarray]) -> Path:
    """Write `outputs` to an .npz (keys = output names), atomically (temp file, then rename)."""
    path = Path(path)
    if path.is_dir():
        raise GraphError("is a folder: name the .npz file to write", where=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.save_npz(path, **outputs)
    return path
