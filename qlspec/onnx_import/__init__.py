"""QuantLab-exported ONNX (Deeploy and DORY flavours, both QuantLib lineages) -> qlspec graph.

`import_onnx(path)` returns the graph exactly as exported (every requantiser, pool and reshape
kept, tensor names preserved, so intermediate activations can be compared with a reference);
`qlspec.graph.passes.optimise` then simplifies it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from qlspec.graph.ir import Graph
from qlspec.onnx_import import deeploy, dory, standard
from qlspec.onnx_import.importer import Importer
from qlspec.onnx_import.reader import load_model

RULES = {
    "Add": dory.lower_add,
    "AveragePool": standard.lower_average_pool,
    "Clip": standard.lower_clip,
    "Concat": standard.lower_concat,
    "Constant": standard.lower_constant,
    "Conv": standard.lower_conv,
    "Flatten": standard.lower_flatten,
    "Gemm": standard.lower_gemm,
    "GlobalAveragePool": standard.lower_global_average_pool,
    "Identity": standard.lower_identity,
    "MatMul": standard.lower_matmul,
    "MaxPool": standard.lower_max_pool,
    "Mul": dory.lower_requant_chain,
    "Pad": standard.lower_pad,
    "RequantShift": deeploy.lower_requant_shift,
    "Reshape": standard.lower_reshape,
    "Transpose": standard.lower_transpose,
}


def import_onnx(path: Path, *, input_types: Mapping[str, tuple[int, bool]] | None = None) -> Graph:
    """Parse a QuantLab-exported ONNX file into a qlspec graph.

    The file carries no input precision, so float32 graph inputs are declared signed 32-bit
    integers unless `input_types` gives {input name: (bits, signed)} (e.g. (8, False) for
    uint8 images); integer-typed ONNX inputs keep their type. Raises `OnnxImportError` naming the
    file, the node and its op type for anything unreadable or unsupported.
    """
    path = Path(path)
    return Importer(path, load_model(path), RULES, input_types).run()


__all__ = ["RULES", "import_onnx"]
