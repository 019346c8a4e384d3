"""What `qlspec convert` and `qlspec infer` read and write: models (graph folder or .onnx),
input .npz files and output .npz files."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx

from qlspec import atomic
from qlspec.errors import GraphError
from qlspec.graph.io import GRAPH_FILE, load_graph
from qlspec.graph.ir import Graph
from qlspec.graph.passes import optimise
from qlspec.npz import read_npz
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


INPUT_PRECISIONS = {"uint8": (8, False), "int8": (8, True), "int32": (32, True)}  # `--input` -> (bits, signed)


def input_precision(
    onnx_path: Path, given: str | None = None, config: Path | None = None
) -> tuple[dict[str, tuple[int, bool]] | None, str]:
    """The input precision of an ONNX file, which the graph itself does not carry, and where it came from.

    In this order: `given` (``uint8``, ``int8`` or ``int32``, for every graph input); the side
    file `config` names (`read_side_file`); a side file beside the model (`side_input_types`); else
    None, which the importer takes as 32-bit signed. `given` and `config` together are refused.
    """
    if given is not None and config is not None:
        raise GraphError("--input and --config both give the input precision: use one", where="qlspec")
    if given is not None:
        if given not in INPUT_PRECISIONS:
            raise GraphError(f"unknown input precision {given!r} (choose from {', '.join(INPUT_PRECISIONS)})", where="--input")
        return {name: INPUT_PRECISIONS[given] for name in graph_inputs(onnx_path)}, "--input"
    if config is not None:
        types = read_side_file(Path(config), onnx_path)
        if types is None:
            raise GraphError(
                "declares no input precision (expected input_bits and input_signed, DORY's config_*.json "
                "keys, or input: {name, bits, signed}, qlspec's metadata.json)",
                where=str(config),
            )
        return types, str(config)
    for side in _side_files(onnx_path):
        types = read_side_file(side, onnx_path)
        if types is not None:
            return types, str(side)
    return None, "default (nothing declares it)"


def read_side_file(path: Path, onnx_path: Path) -> dict[str, tuple[int, bool]] | None:
    """Input precision from one side JSON: qlspec's export metadata.json (``input: {name, bits, signed}``)
    or a QuantLab DORY config (``input_bits`` and ``input_signed``, for the graph's first input); None
    when the file declares neither."""
    if not path.is_file():
        raise GraphError("no such file", where=str(path))
    data = _json(path)
    meta = data.get("input", {})
    if isinstance(meta, dict) and {"name", "bits", "signed"} <= set(meta):
        if not isinstance(meta["name"], str):
            raise GraphError(f"input.name must be a string (got {meta['name']!r:.40})", where=str(path))
        return {meta["name"]: (_bits(meta["bits"], path, "input.bits"), _flag(meta["signed"], path, "input.signed"))}
    if "input_bits" in data and "input_signed" in data:
        return {first_input(onnx_path): (_bits(data["input_bits"], path, "input_bits"), _flag(data["input_signed"], path, "input_signed"))}
    return None


def side_input_types(onnx_path: Path) -> dict[str, tuple[int, bool]] | None:
    """Input precision declared by a side file beside an ONNX file: qlspec's metadata.json, else the
    first ``config_*.json`` (DORY's name) that declares it; None when none does."""
    for side in _side_files(onnx_path):
        types = read_side_file(side, onnx_path)
        if types is not None:
            return types
    return None


def _side_files(onnx_path: Path) -> list[Path]:
    folder = Path(onnx_path).parent
    return [p for p in (folder / "metadata.json",) if p.is_file()] + sorted(folder.glob("config_*.json"))


def _bits(value: object, path: Path, key: str) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not (math.isfinite(value) and value.is_integer()))
        or not 1 <= int(value) <= 64
    ):
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
    return graph_inputs(onnx_path)[0]


def graph_inputs(onnx_path: Path) -> list[str]:
    """The names of an ONNX graph's inputs that are not initialisers, in order."""
    try:
        graph = onnx.load(str(onnx_path), load_external_data=False).graph
    except FileNotFoundError:
        raise GraphError("no such file", where=str(onnx_path)) from None
    except Exception as e:
        raise GraphError(f"not a readable ONNX file ({e.__class__.__name__})", where=str(onnx_path)) from None
    initialisers = {t.name for t in graph.initializer}
    names = [i.name for i in graph.input if i.name not in initialisers]
    if not names:
        raise GraphError("the graph has no inputs", where=str(onnx_path))
    return names


def read_inputs(npz_path: Path, g: Graph) -> dict[str, np.ndarray]:
    """The arrays of an .npz for `g`'s inputs: by name when every input name is a key, else by
    order (the n first arrays for the n inputs; the shared QuantLab/Deeploy cases name them
    arr_0, arr_1, ... or input_0, ..., and kernel tests store extra arrays, such as the weights,
    after the inputs, which are ignored). Values are checked by `run_graph`."""
    arrays = read_npz(npz_path, error=GraphError)
    if all(t in arrays for t in g.inputs):
        return {t: arrays[t] for t in g.inputs}
    if len(arrays) < len(g.inputs):
        raise GraphError(
            f"holds {len(arrays)} array(s) {list(arrays)} but the graph takes {len(g.inputs)} input(s) {list(g.inputs)}",
            where=str(npz_path),
        )
    return dict(zip(g.inputs, arrays.values()))


def compare_outputs(outputs: Mapping[str, np.ndarray], npz_path: Path) -> list[tuple[str, str, int, int]]:
    """Each output against a reference .npz: matched by the model's own output name when the reference
    has every one, else by order (QuantLab's kernel cases name them arr_0, output_0, ...).
    Returns (output name, reference key, values that differ, values) per output; a shape mismatch is
    an error naming both."""
    ref = read_npz(npz_path, error=GraphError)
    names = list(outputs)
    if all(n in ref for n in names):
        keys = names
    elif len(ref) >= len(names):
        keys = list(ref)[: len(names)]
    else:
        raise GraphError(f"holds {len(ref)} array(s) {list(ref)} but the model has {len(names)} output(s) {names}", where=str(npz_path))
    rows = []
    for name, key in zip(names, keys):
        got, want = np.asarray(outputs[name]), ref[key]
        if got.shape != want.shape:
            raise GraphError(f"{key}: shape {want.shape} but output {name!r} is {got.shape}", where=str(npz_path))
        rows.append((name, key, int((got.astype(np.int64) != want.astype(np.int64)).sum()), int(got.size)))
    return rows


def write_outputs(path: Path, outputs: Mapping[str, np.ndarray]) -> Path:
    """Write `outputs` to an .npz (keys = output names), atomically (temp file, then rename)."""
    path = Path(path)
    if path.is_dir():
        raise GraphError("is a folder: name the .npz file to write", where=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.save_npz(path, **outputs)
    return path
