"""Writing one export folder and running an exported file (reference engine, onnxruntime).

A flavour folder holds, like the shared QuantLab/Deeploy test cases:

- ``network.onnx``: the graph (`qlspec.export.deeploy` or `qlspec.export.dory`);
- ``inputs.npz``: ``input``, int64 ``(n, C, H, W)``: the integer input of n validation images;
- ``outputs.npz``: ``output``, int64: what F2T's graph (rung TQ) computes for them (the test vector);
- ``metadata.json``: flavour, qlspec version, spec hash, ``requant_bits`` (the fixed D, or null when
  each requantiser's D was fitted for int32: then per layer ``div``), the input quantiser, and per ONNX
  tensor its eps (real value = eps * integer; per channel on axis 1 where a list), range and bits;
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
from qlspec.export.f2t import Integerised
from qlspec.export.onnx_graph import INPUT, OUTPUT, pool_k
from qlspec.graph.ir import Graph

Flavour = Literal["deeploy", "dory"]
ONNX_FILE = "network.onnx"
DORY_CONFIG = "config_network.json"
WRITERS = {"deeploy": deeploy.to_onnx, "dory": dory.to_onnx}


def to_onnx(net: Integerised | Graph, flavour: Flavour) -> onnx.ModelProto:
    """The flavour's ONNX model of F2T's result (or of an integer graph taking ``input``)."""
    if flavour not in WRITERS:
        raise ValueError(f"unknown flavour {flavour!r}")
    return WRITERS[flavour](net.integer_graph() if isinstance(net, Integerised) else net)


def _describe(g: Graph, tensor: str, eps: np.ndarray) -> dict[str, Any]:
    info = g.info(tensor)
    return {
        "shape": list(info.shape),
        "eps": np.asarray(eps).tolist(),
        "lo": info.lo,
        "hi": info.hi,
        "signed": info.signed,
        "bits": info.bits,
    }


def metadata(net: Integerised, flavour: Flavour, spec_hash: str | None) -> dict[str, Any]:
    """What the file does not say: per ONNX tensor, eps (real = eps * integer) and its integer type.

    The eps describe the values the file holds: a pool's output is a mean there (see
    `qlspec.export.onnx_graph`), so its eps is the sum's times k."""
    g = net.integer_graph()
    q = net.input_quantiser
    tensors = {}
    for t in g.activations():
        if t in net.eps:
            tensors[t] = _describe(g, t, np.asarray(net.eps[t]) * (pool_k(g, t) if t != INPUT else 1))
    info = g.info(INPUT)
    return {
        "format": "qlspec-export/2",
        "flavour": flavour,
        "qlspec_version": __version__,
        "spec_hash": spec_hash,
        "requant_bits": net.requant_bits,
        "div": None if net.requant_bits is None else 2**net.requant_bits,
        "input": {
            "name": INPUT,
            "eps": net.input_eps,
            "bits": info.bits,
            "signed": bool(info.signed),
            "lo": int(q.attr("lo")),
            "hi": int(q.attr("hi")),
            "rounding": q.attr("rounding"),
            "formula": f"clip({q.attr('rounding')}(x / eps), {q.attr('lo')}, {q.attr('hi')})",
        },
        "output": {"name": OUTPUT, "eps": np.asarray(net.output_eps).tolist(), "bits": g.info(OUTPUT).bits},
        "tensors": tensors,
        "layers": [
            {
                "op": n.op,
                "source": net.sources.get(n.name, ""),
                "inputs": list(n.inputs),
                "output": n.outputs[0],
                **({"div": int(n.attr("div"))} if n.op == "RequantShift" else {}),
            }
            for n in g.nodes
        ],
    }


def write_flavour(
    net: Integerised, folder: Path, flavour: Flavour, inputs: np.ndarray, outputs: np.ndarray, *, spec_hash: str | None = None
) -> Path:
    """Write the flavour's folder (see the module docstring); return the ONNX path.

    `inputs`: integer inputs ``(n, ...)``; `outputs`: the graph's integer outputs for them (rung TQ)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ONNX_FILE
    onnx.save_model(to_onnx(net, flavour), str(path))
    np.savez(folder / "inputs.npz", input=np.asarray(inputs, np.int64))
    np.savez(folder / "outputs.npz", output=np.asarray(outputs, np.int64))
    (folder / "metadata.json").write_text(json.dumps(metadata(net, flavour, spec_hash), indent=1) + "\n")
    if flavour == "dory":
        config = dory.side_config(net.input_info, net.input_eps, net.input_quantiser.attr("rounding"), ONNX_FILE)
        (folder / DORY_CONFIG).write_text(json.dumps(config, indent=1) + "\n")
    return path


def run_engine(path: Path, inputs: np.ndarray, *, input_bits: int = 8, input_signed: bool = True, optimised: bool = False) -> np.ndarray:
    """The integer output of the exported file run by qlspec's importer and reference engine."""
    from qlspec.engine import run_graph
    from qlspec.graph.passes import optimise
    from qlspec.onnx_import import import_onnx

    g = import_onnx(path, input_types={INPUT: (input_bits, input_signed)})
    if optimised:
        g = optimise(g)
    return np.asarray(run_graph(g, {INPUT: np.asarray(inputs)})[OUTPUT]).astype(np.int64)


def run_onnxruntime(model: onnx.ModelProto, inputs: np.ndarray, *, threads: int = 1, batch: int = 64) -> np.ndarray:
    """onnxruntime's float32 output for `model` (DORY annotations stripped first), on `threads` threads,
    `batch` images at a time (all 1,000 validation images at once took 3 GB in onnxruntime's arena)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(dory.strip_annotations(model).SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return np.concatenate(
        [sess.run([OUTPUT], {INPUT: np.asarray(inputs[s : s + batch], np.float32)})[0] for s in range(0, max(len(inputs), 1), batch)]
    )


def histogram(diff: np.ndarray) -> dict[str, int]:
    """``{difference: count}`` of an integer difference array (JSON-ready keys)."""
    vals, counts = np.unique(np.asarray(diff).astype(np.int64), return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(vals, counts)}
