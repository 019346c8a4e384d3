"""Lowering of the plain ONNX ops a QuantLab integer graph uses (opset 10 and later spellings)."""

from __future__ import annotations

import math

import numpy as np
import onnx

from qlspec.graph.ir import Node
from qlspec.onnx_import.importer import Importer
from qlspec.onnx_import.reader import tensor_value


def _one_output(imp: Importer, node: onnx.NodeProto) -> str:
    outs = [o for o in node.output if o]
    if len(outs) != 1:
        imp.fail(node, f"expected one output, got {len(outs)} (optional outputs such as indices are not supported)")
    return outs[0]


def _window_pads(imp: Importer, node: onnx.NodeProto, a, in_hw, kernel, strides, dilations) -> tuple[int, int, int, int]:
    """Explicit (top, left, bottom, right) pads from `pads` or `auto_pad`."""
    auto = a.string("auto_pad", "NOTSET")
    pads = a.ints("pads", (0, 0, 0, 0))
    if len(pads) != 4:
        imp.fail(node, f"only 2-D windows are supported: pads needs 4 values (got {list(pads)})")
    if auto in ("NOTSET", "VALID"):
        return (0, 0, 0, 0) if auto == "VALID" else (pads[0], pads[1], pads[2], pads[3])
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        imp.fail(node, f"auto_pad must be NOTSET, VALID, SAME_UPPER or SAME_LOWER (got {auto!r})")
    begin, end = [], []
    for size, k, s, d in zip(in_hw, kernel, strides, dilations):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return (begin[0], begin[1], end[0], end[1])


def _pair(imp, node, a, name, default=(1, 1)):
    v = a.ints(name, default)
    if len(v) != 2:
        imp.fail(node, f"only 2-D windows are supported: {name} needs 2 values (got {list(v)})")
    return v


def lower_conv(imp: Importer, node: onnx.NodeProto) -> None:
    a = imp.attributes(node)
    if len(node.input) not in (2, 3):
        imp.fail(node, f"Conv takes 2 or 3 inputs (got {len(node.input)})")
    x = imp.tensor(node, node.input[0])
    w = imp.tensor(node, node.input[1])
    b = imp.tensor(node, node.input[2]) if len(node.input) == 3 and node.input[2] else ""
    x_info, w_info = imp.info(x), imp.info(w)
    if len(w_info.shape) != 4 or len(x_info.shape) != 4:
        imp.fail(node, f"only 2-D convolutions on NCHW are supported (input {list(x_info.shape)}, weight {list(w_info.shape)})")
    kernel = _pair(imp, node, a, "kernel_shape", w_info.shape[2:])
    if tuple(kernel) != w_info.shape[2:]:
        imp.fail(node, f"kernel_shape {list(kernel)} does not match the weight's {list(w_info.shape[2:])}")
    strides = _pair(imp, node, a, "strides")
    dilations = _pair(imp, node, a, "dilations")
    pads = _window_pads(imp, node, a, x_info.shape[2:], kernel, strides, dilations)
    group = a.int("group", 1)
    a.finish()
    imp.emit(
        node,
        Node.make(
            "Conv",
            imp.node_name(node),
            [x, w] + ([b] if b else []),
            [_one_output(imp, node)],
            strides=strides,
            pads=pads,
            dilations=dilations,
            group=group,
        ),
    )


def lower_gemm(imp: Importer, node: onnx.NodeProto) -> None:
    a = imp.attributes(node)
    alpha, beta = a.float("alpha", 1.0), a.float("beta", 1.0)
    if alpha != 1.0 or beta != 1.0:
        imp.fail(node, f"only alpha = beta = 1 is integer-exact (got alpha={alpha}, beta={beta})")
    trans_a, trans_b = bool(a.int("transA", 0)), bool(a.int("transB", 0))
    a.finish()
    if len(node.input) not in (2, 3):
        imp.fail(node, f"Gemm takes 2 or 3 inputs (got {len(node.input)})")
    ins = [imp.tensor(node, t) for t in node.input if t]
    imp.emit(node, Node.make("Gemm", imp.node_name(node), ins, [_one_output(imp, node)], trans_a=trans_a, trans_b=trans_b))


def lower_matmul(imp: Importer, node: onnx.NodeProto) -> None:
    imp.attributes(node).finish()
    ins = [imp.tensor(node, t) for t in node.input]
    imp.emit(node, Node.make("MatMul", imp.node_name(node), ins, [_one_output(imp, node)]))


def lower_plain_add(imp: Importer, node: onnx.NodeProto) -> None:
    imp.attributes(node).finish()
    if len(node.input) != 2:
        imp.fail(node, f"Add takes 2 inputs (got {len(node.input)})")
    ins = [imp.tensor(node, t) for t in node.input]
    imp.emit(node, Node.make("Add", imp.node_name(node), ins, [_one_output(imp, node)]))


def lower_concat(imp: Importer, node: onnx.NodeProto) -> None:
    a = imp.attributes(node)
    axis = a.int("axis")
    a.finish()
    ins = [imp.tensor(node, t) for t in node.input]
    imp.emit(node, Node.make("Concat", imp.node_name(node), ins, [_one_output(imp, node)], axis=axis))


def lower_max_pool(imp: Importer, node: onnx.NodeProto) -> None:
    a = imp.attributes(node)
    x = imp.tensor(node, node.input[0])
    kernel = _pair(imp, node, a, "kernel_shape", None) if a.has("kernel_shape") else imp.fail(node, "missing attribute 'kernel_shape'")
    strides = _pair(imp, node, a, "strides")
    dilations = _pair(imp, node, a, "dilations")
    pads = _window_pads(imp, node, a, imp.info(x).shape[2:], kernel, strides, dilations)
    ceil_mode = bool(a.int("ceil_mode", 0))
    if a.int("storage_order", 0) != 0:
        imp.fail(node, "storage_order=1 is not supported")
    a.finish()
    imp.emit(
        node,
        Node.make(
            "MaxPool",
            imp.node_name(node),
            [x],
            [_one_output(imp, node)],
            kernel_shape=kernel,
            strides=strides,
            pads=pads,
            dilations=dilations,
            ceil_mode=ceil_mode,
        ),
    )


def lower_average_pool(imp: Importer, node: onnx.NodeProto) -> None:
    a = imp.attributes(node)
    x = imp.tensor(node, node.input[0])
    kernel = _pair(imp, node, a, "kernel_shape", None) if a.has("kernel_shape") else imp.fail(node, "missing attribute 'kernel_shape'")
    strides = _pair(imp, node, a, "strides")
    pads = _window_pads(imp, node, a, imp.info(x).shape[2:], kernel, strides, (1, 1))
    if a.int("ceil_mode", 0) != 0:
        imp.fail(node, "ceil_mode=1 gives windows of different sizes, which cannot be requantised exactly")
    if any(pads) and a.int("count_include_pad", 0) != 1:
        imp.fail(node, "padding without count_include_pad=1 gives windows of different sizes, which cannot be requantised exactly")
    a.ints("dilations", (1, 1)) == (1, 1) or imp.fail(node, "dilated average pooling is not supported")
    a.finish()
    out = _one_output(imp, node)
    imp.emit(node, Node.make("SumPool", imp.node_name(node), [x], [out], kernel_shape=kernel, strides=strides, pads=pads))
    imp.pending_divisor[out] = (kernel[0] * kernel[1], node)


def lower_global_average_pool(imp: Importer, node: onnx.NodeProto) -> None:
    imp.attributes(node).finish()
    x = imp.tensor(node, node.input[0])
    shape = imp.info(x).shape
    if len(shape) != 4:
        imp.fail(node, f"input must be NCHW (got shape {list(shape)})")
    out = _one_output(imp, node)
    imp.emit(node, Node.make("GlobalSumPool", imp.node_name(node), [x], [out]))
    imp.pending_divisor[out] = (shape[2] * shape[3], node)


def lower_flatten(imp: Importer, node: onnx.NodeProto) -> None:
    a = imp.attributes(node)
    axis = a.int("axis", 1)
    a.finish()
    imp.emit(node, Node.make("Flatten", imp.node_name(node), [imp.tensor(node, node.input[0])], [_one_output(imp, node)], axis=axis))


def lower_reshape(imp: Importer, node: onnx.NodeProto) -> None:
    a = imp.attributes(node)
    if a.int("allowzero", 0) != 0:
        imp.fail(node, "allowzero=1 is not supported")
    shape: tuple[int, ...] | None
    if len(node.input) >= 2:
        raw = imp.const_value(node.input[1])
        if raw is None:
            imp.fail(node, "the target shape must be a constant")
        shape = tuple(int(v) for v in np.asarray(raw).ravel())
    else:
        shape = a.ints("shape")
        if shape is None:
            imp.fail(node, "missing the target shape")
    a.finish()
    x = imp.tensor(node, node.input[0])
    src = imp.info(x).shape
    if shape and src and shape[0] == src[0] and shape[0] > 0:
        shape = (0, *shape[1:])  # keep the batch axis free: 0 copies it
    imp.emit(node, Node.make("Reshape", imp.node_name(node), [x], [_one_output(imp, node)], shape=shape))


def lower_transpose(imp: Importer, node: onnx.NodeProto) -> None:
    a = imp.attributes(node)
    x = imp.tensor(node, node.input[0])
    perm = a.ints("perm", tuple(reversed(range(len(imp.info(x).shape)))))
    a.finish()
    imp.emit(node, Node.make("Transpose", imp.node_name(node), [x], [_one_output(imp, node)], perm=perm))


def _integer_scalar(imp: Importer, node: onnx.NodeProto, value, what: str) -> int:
    v = float(np.asarray(value).reshape(-1)[0]) if np.asarray(value).size == 1 else imp.fail(node, f"{what} must be a scalar")
    if not math.isfinite(v) or v != round(v):
        imp.fail(node, f"{what} must be an integer in an integer graph (got {v})")
    return int(v)


def lower_pad(imp: Importer, node: onnx.NodeProto) -> None:
    a = imp.attributes(node)
    mode = a.string("mode", "constant")
    value: np.ndarray | float | None
    if imp.opset < 11:
        pads = a.ints("pads")
        value = a.float("value", 0.0)
    else:
        raw = imp.const_value(node.input[1]) if len(node.input) > 1 else None
        if raw is None:
            imp.fail(node, "pads must be a constant")
        pads = tuple(int(v) for v in np.asarray(raw).ravel())
        value = imp.const_value(node.input[2]) if len(node.input) > 2 and node.input[2] else 0.0
        if len(node.input) > 3 and node.input[3]:
            imp.fail(node, "the axes input is not supported")
    if pads is None:
        imp.fail(node, "missing pads")
    a.finish()
    if mode not in ("constant", "edge", "reflect"):
        imp.fail(node, f"mode must be constant, edge or reflect (got {mode!r})")
    value = _integer_scalar(imp, node, value, "the pad value")
    imp.emit(
        node,
        Node.make(
            "Pad", imp.node_name(node), [imp.tensor(node, node.input[0])], [_one_output(imp, node)], pads=pads, mode=mode, value=value
        ),
    )


def lower_clip(imp: Importer, node: onnx.NodeProto) -> None:
    a = imp.attributes(node)
    x = imp.tensor(node, node.input[0])
    info = imp.info(x)
    if imp.opset < 11:
        lo, hi = a.float("min", -math.inf), a.float("max", math.inf)
    else:
        bounds = []
        for i in (1, 2):
            if len(node.input) > i and node.input[i]:
                raw = imp.const_value(node.input[i])
                if raw is None:
                    imp.fail(node, "min and max must be constants")
                bounds.append(float(np.asarray(raw).reshape(-1)[0]))
            else:
                bounds.append(-math.inf if i == 1 else math.inf)
        lo, hi = bounds
    a.finish()
    lo = info.lo if lo == -math.inf else _integer_scalar(imp, node, lo, "min")
    hi = info.hi if hi == math.inf else _integer_scalar(imp, node, hi, "max")
    if lo > hi:
        imp.fail(node, f"empty clip range [{lo}, {hi}]")
    imp.emit(node, Node.make("Clip", imp.node_name(node), [x], [_one_output(imp, node)], lo=lo, hi=hi))


def lower_identity(imp: Importer, node: onnx.NodeProto) -> None:
    imp.attributes(node).finish()
    src = imp.alias.get(node.input[0], node.input[0])
    imp.alias[_one_output(imp, node)] = src


def lower_constant(imp: Importer, node: onnx.NodeProto) -> None:
    a = imp.attributes(node)
    attr = a.by_name.get("value")
    if attr is None or attr.type != onnx.AttributeProto.TENSOR:
        imp.fail(node, "only Constant with a TENSOR 'value' attribute is supported")
    a.read.add("value")
    a.finish()
    try:
        imp.raw_consts[_one_output(imp, node)] = tensor_value(attr.t, "attribute 'value'", None)
    except ValueError as e:
        imp.fail(node, str(e))
