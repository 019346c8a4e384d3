"""Writing one export folder and running an exported file (reference engine, onnxruntime).

A flavour folder holds, like the shared QuantLab/Deeploy test cases:

- ``network.onnx``: the graph (`qlspec.export.deeploy` or `qlspec.export.dory`);
- ``inputs.npz``: ``input``, int64 ``(n, C, H, W)``: the integer input of n validation images;
- ``outputs.npz``: ``output``, int64: what the TQ network computes for them (the test vector);
- ``metadata.json``: flavour, qlspec version, spec hash, ``requant_bits``, the input quantiser, and
  per ONNX tensor its eps (real value = eps * integer; per channel on axis 1 where a list), range and bits;
- DORY only: ``config_network.json``, DORY's side JSON (`qlspec.export.dory.side_config`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx

from qlspec import __version__
from qlspec.export import deeploy, dory
from qlspec.export.integer_net import IntegerNet
from qlspec.export.onnx_graph import INPUT, OUTPUT

Flavour = Literal["deeploy", "dory"]
ONNX_FILE = "network.onnx"
DORY_CONFIG = "config_network.json"


def to_onnx(net: IntegerNet, flavour: Flavour) -> onnx.ModelProto:
    if flavour == "deeploy":
        return deeploy.to_onnx(net)
    if flavour == "dory":
        return dory.to_onnx(net)
    raise ValueError(f"unknown flavour {flavour!r}")


def onnx_names(net: IntegerNet) -> dict[str, str]:
    """IntegerNet tensor name -> ONNX tensor name."""
    names = {t: t for t in net.tensors()}
    names[net.input.name] = INPUT
    if net.layers:
        names[net.output.name] = OUTPUT
    return names


def metadata(net: IntegerNet, flavour: Flavour, spec_hash: str | None) -> dict[str, Any]:
    names = onnx_names(net)
    return {
        "format": "qlspec-export/1",
        "flavour": flavour,
        "qlspec_version": __version__,
        "spec_hash": spec_hash,
        "requant_bits": net.requant_bits,
        "div": 2**net.requant_bits,
        "input": {"name": INPUT, "eps": float(net.input.eps), "bits": net.input.bits, "signed": bool(net.input.signed),
                  "n_levels": net.input.n_levels, "rounding": net.input_rounding,
                  "formula": f"clip({net.input_rounding}(x / eps), {net.input.lo}, {net.input.hi})"},
        "output": {"name": OUTPUT, "eps": net.output_eps.tolist(), "bits": net.output.bits},
        "tensors": {names[k]: t.describe() for k, t in net.tensors().items()},
        "layers": [{"op": l.op, "source": l.source, "input": names[l.input], "output": names[l.output.name],
                    **({"weight_bits": int(np.log2(l.attrs["weight_levels"]))} if "weight_levels" in l.attrs else {})}
                   for l in net.layers],
    }


def write_flavour(net: IntegerNet, folder: Path, flavour: Flavour, inputs: np.ndarray, outputs: np.ndarray,
                  *, spec_hash: str | None = None) -> Path:
    """Write the flavour's folder (see the module docstring); return the ONNX path.

    `inputs`: integer inputs ``(n, ...)``; `outputs`: the TQ network's integer outputs for them."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ONNX_FILE
    onnx.save_model(to_onnx(net, flavour), str(path))
    np.savez(folder / "inputs.npz", input=np.asarray(inputs, np.int64))
    np.savez(folder / "outputs.npz", output=np.asarray(outputs, np.int64))
    (folder / "metadata.json").write_text(json.dumps(metadata(net, flavour, spec_hash), indent=1) + "\n")
    if flavour == "dory":
        (folder / DORY_CONFIG).write_text(json.dumps(dory.side_config(net, ONNX_FILE), indent=1) + "\n")
    return path


def run_engine(path: Path, inputs: np.ndarray, *, input_bits: int = 8, input_signed: bool = True,
               optimised: bool = False) -> np.ndarray:
    """The integer output of the exported file run by qlspec's importer and reference engine."""
    from qlspec.engine import run_graph
    from qlspec.graph.passes import optimise
    from qlspec.onnx_import import import_onnx

    g = import_onnx(path, input_types={INPUT: (input_bits, input_signed)})
    if optimised:
        g = optimise(g)
    return np.asarray(run_graph(g, {INPUT: np.asarray(inputs)})[OUTPUT]).astype(np.int64)


def run_onnxruntime(model: onnx.ModelProto, inputs: np.ndarray) -> np.ndarray:
    """onnxruntime's float32 output for `model` (DORY annotations stripped first)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(dory.strip_annotations(model).SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run([OUTPUT], {INPUT: np.asarray(inputs, np.float32)})[0]


def histogram(diff: np.ndarray) -> dict[str, int]:
    """``{difference: count}`` of an integer difference array (JSON-ready keys)."""
    vals, counts = np.unique(np.asarray(diff).astype(np.int64), return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(vals, counts)}
