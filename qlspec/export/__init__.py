"""Fake-to-true integerisation (F2T) and QuantLab-format ONNX export (Deeploy and DORY flavours).

    inet = fake_to_true(fq, requant_bits=24, input_shape=(1, 3, 120, 120))   # IntegerNet
    tq = inet.module()                        # rung TQ: integer in, integer out (exact)
    q = inet.quantise_input(x)                # the integer input of float images x
    write_flavour(inet, folder, "deeploy", q, tq(q))   # network.onnx, inputs/outputs.npz, metadata.json
"""

from qlspec.errors import ExportError
from qlspec.export.f2t import fake_to_true
from qlspec.export.files import histogram, metadata, run_engine, run_onnxruntime, to_onnx, write_flavour
from qlspec.export.integer_net import IntegerNet, Layer, TensorSpec, TQNet

__all__ = [
    "ExportError", "IntegerNet", "Layer", "TQNet", "TensorSpec", "fake_to_true", "histogram", "metadata",
    "run_engine", "run_onnxruntime", "to_onnx", "write_flavour",
]
