"""Fake-to-true integerisation (F2T) and QuantLab-format ONNX export (Deeploy and DORY flavours).

net = fake_to_true(fq, requant_bits=24, input_shape=(1, 3, 120, 120))   # Integerised: the qlspec Graph + eps
out = net.run(x)                          # rung TQ: the graph on float images x, by the reference engine
q = net.quantise_input(x)                 # the integer input (the graph's own Quantise node)
write_flavour(net, folder, "deeploy", q, out)   # network.onnx, inputs/outputs.npz, metadata.json
"""

from qlspec.errors import ExportError
from qlspec.export.f2t import Integerised, fake_to_true
from qlspec.export.files import histogram, metadata, run_engine, run_onnxruntime, to_onnx, write_flavour

__all__ = [
    "ExportError",
    "Integerised",
    "fake_to_true",
    "histogram",
    "metadata",
    "run_engine",
    "run_onnxruntime",
    "to_onnx",
    "write_flavour",
]
