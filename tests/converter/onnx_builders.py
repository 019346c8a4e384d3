"""DORY- and Deeploy-flavour ONNX graphs built with onnx.helper, as QuantLab would export them
(integers stored in float32, opset 10). Used by the converter tests and by bench/bench_engine.py."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 10


@dataclass
class OnnxGraph:
    """Accumulates nodes and float32 initializers, then makes a model."""

    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    count: int = 0

    def fresh(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def const(self, stem: str, value) -> str:
        name = self.fresh(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], stem: str | None = None, domain: str = "", **attrs) -> str:
        out = self.fresh(stem or op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.fresh(op), domain=domain, **attrs))
        return out

    # -- DORY spellings ------------------------------------------------------------------------
    def dory_requant(self, x: str, mul, add, shift: int, lo: int | None = 0, hi: int | None = 255) -> str:
        """Mul -> Add -> Div(2^shift) -> Floor [-> Clip(lo, hi)], `add` including DORY's half."""
        y = self.node("Mul", [x, self.const("mul", mul)], mult_bits=32)
        y = self.node("Add", [y, self.const("add", add)], add_bits=32)
        d = self.fresh("div")
        self.nodes.append(
            helper.make_node(
                "Constant", [], [d], name=self.fresh("Constant"), value=numpy_helper.from_array(np.array(2.0**shift, np.float32))
            )
        )
        y = self.node("Div", [y, d])
        y = self.node("Floor", [y])
        if lo is None or hi is None:
            return y
        return self.node("Clip", [y], min=float(lo), max=float(hi), out_bits=8)

    def conv(self, x: str, w, pads=(0, 0, 0, 0), strides=(1, 1), group=1, bias=None) -> str:
        w = np.asarray(w)
        ins = [x, self.const("w", w)] + ([self.const("b", bias)] if bias is not None else [])
        return self.node(
            "Conv",
            ins,
            kernel_shape=list(w.shape[2:]),
            pads=list(pads),
            strides=list(strides),
            group=group,
            dilations=[1, 1],
            weight_bits=8,
            bias_bits=32,
        )

    def dory_adder(self, a: str, b: str, p: dict) -> str:
        return self.node("Add", [a, b], add_bits=8, **p)

    def model(
        self, inputs: dict[str, tuple[int, ...]], outputs: list[str], name: str = "g", symbolic_batch: bool = False
    ) -> onnx.ModelProto:
        ins = [
            helper.make_tensor_value_info(k, TensorProto.FLOAT, (["N"] if symbolic_batch else [s[0]]) + list(s[1:]))
            for k, s in inputs.items()
        ]
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
        g = helper.make_graph(self.nodes, name, ins, outs, self.inits)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="qlspec-tests")


def mobilenet_like(
    rng: np.random.Generator, size: int = 32, width: int = 16, blocks: int = 3, small: bool = False, n_classes: int = 10
) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """DORY-flavour MobileNet-V1-like stack: conv3x3/s2 then `blocks` x (depthwise 3x3, pointwise
    1x1), each followed by Mul/Add/Div/Floor/Clip, then GlobalAveragePool + requant, Flatten,
    Gemm. `small=True` keeps every intermediate below 2^24 so float32 onnxruntime is exact
    (4-bit-ish activations and weights); the input is then in [0, 15]."""
    b = OnnxGraph()
    amax, wmax = (15, 2) if small else (255, 127)
    shift = 8 if small else 16
    half = 1 << (shift - 1)

    def rq(x, channels, k):
        # mul ~ 2^shift * amax / (k * wmax * amax) keeps outputs in range; add has the half in it
        # mul ~ 2^shift * 3 / (sqrt(k) * wmax) keeps activations spread over their range
        scale = (1 << shift) * 3 / (np.sqrt(k) * wmax)
        mul = rng.integers(max(1, int(scale * 0.7)), max(2, int(scale * 1.3)) + 1, (channels, 1, 1))
        add = rng.integers(-(1 << shift), 1 << shift, (channels, 1, 1)) * (amax // 4) + half
        return b.dory_requant(x, mul, add, shift, 0, amax)

    x = "input"
    c = width
    y = b.conv(x, rng.integers(-wmax, wmax + 1, (c, 3, 3, 3)), pads=(1, 1, 1, 1), strides=(2, 2))
    y = rq(y, c, 27)
    for i in range(blocks):
        stride = 2 if i % 2 == 1 else 1
        y = b.conv(y, rng.integers(-wmax, wmax + 1, (c, 1, 3, 3)), pads=(1, 1, 1, 1), strides=(stride, stride), group=c)
        y = rq(y, c, 9)
        c2 = c * 2 if i % 2 == 1 else c
        y = b.conv(y, rng.integers(-wmax, wmax + 1, (c2, c, 1, 1)))
        y = rq(y, c2, c)
        c = c2
    y = b.node("GlobalAveragePool", [y])
    spatial = size // 2 // (2 ** (blocks // 2))
    k = spatial * spatial
    mul = rng.integers(1, 3, (c, 1, 1)) * max(1, (1 << shift) // k) * k  # AlignAvgPoolPass: a multiple of k
    y = b.dory_requant(y, mul, np.full((c, 1, 1), half), shift, 0, amax)
    y = b.node("Flatten", [y], axis=1)
    w = rng.integers(-wmax, wmax + 1, (n_classes, c))
    y = b.node("Gemm", [y, b.const("fc_w", w), b.const("fc_b", rng.integers(-100, 100, n_classes))], transB=1)
    model = b.model({"input": (1, 3, size, size)}, [y], "mobilenet_like", symbolic_batch=True)
    return model, (1, 3, size, size)


ANNOTATIONS = {"weight_bits", "bias_bits", "out_bits", "mult_bits", "add_bits"}


def without_annotations(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy without DORY's precision annotations, which onnxruntime rejects; they do not change
    what a node computes (the residual adder's in1_*/in2_*/out_* do, and are kept)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for n in m.graph.node:
        keep = [a for a in n.attribute if a.name not in ANNOTATIONS]
        del n.attribute[:]
        n.attribute.extend(keep)
    return m


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(without_annotations(model).SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {k: v.astype(np.float32) for k, v in feeds.items()})
