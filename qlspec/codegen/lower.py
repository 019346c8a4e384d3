"""Lowering: every node of an optimised qlspec graph becomes C++ statements calling the runtime.

Kernel choice per node (recorded in `Lowered.kernels`, shown in the build summary):

- Conv / ConvRequant, Gemm / GemmRequant, MatMul / MatMulRequant with 8-bit activations, 8-bit
  constant weights and group 1: im2col (ours) + ACL's GEMMLowp core for the int32 accumulators
  ("acl-gemmlowp"), then the project's requantiser. ACL's own convolution/depthwise/FC functions end
  in ACL's fixed-point output stage, which is not the contract, so they are never used.
- Other convolutions (depthwise, grouped, wider types): the project's direct kernel
  ("direct-conv"; "depthwise" when group = C = M), accumulating in int32 when the worst case
  provably fits, else int64.
- Other products (wider types, non-constant operands, batched MatMul): "direct-gemm".
- Everything else: one runtime kernel each (pools, adds, concat, pad, copies, quantise).

Requantisers run in int32 NEON lanes when `qlspec.codegen.requant` proves |x*mul + bias| < 2^31 for
every input the accumulator can hold, else in int64 lanes (`Lowered.lanes`). Without ACL
(`acl=False`, the portable build) the GEMM route is "direct-gemm" and nothing else changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from qlspec.codegen.blob import Blob
from qlspec.codegen.ctype import c_string, cpp_int, cpp_type
from qlspec.codegen.requant import I32, RequantPlan, plan_requant
from qlspec.engine.ops import op_for
from qlspec.engine.ops.base import magnitude
from qlspec.engine.ops.reshape import Reshape
from qlspec.errors import BackendError
from qlspec.graph.ir import Graph, Node, TensorInfo
from qlspec.graph.memory_plan import MemoryPlan, plan_memory

ALIGN = 64


@dataclass
class Lowered:
    """The C++ pieces of one network, ready for `project.render`."""

    graph: Graph
    plan: MemoryPlan
    blob: Blob
    members: list[str] = field(default_factory=list)  # class members (ACL layers)
    setup: list[str] = field(default_factory=list)  # constructor body
    body: list[str] = field(default_factory=list)  # run() body
    scratch_bytes: int = 0  # direct accumulators
    kernels: dict[str, str] = field(default_factory=dict)  # node name -> kernel
    lanes: dict[str, str] = field(default_factory=dict)  # node name -> requantiser lanes
    acl_layers: int = 0


def _strides(shape: tuple[int, ...]) -> list[int]:
    out, s = [], 1
    for d in reversed(shape):
        out.append(s)
        s *= d
    return out[::-1]


def _arr(values) -> str:
    return "{" + ", ".join(cpp_int(v) for v in values) + "}"


def _nd(shape: tuple[int, ...]) -> str:
    if len(shape) > 8:
        raise BackendError(f"tensors of rank {len(shape)} are not supported (at most 8)")
    return f"Nd{{{len(shape)}, {_arr(shape or (1,))}}}"


def _broadcast_strides(shape: tuple[int, ...], out: tuple[int, ...]) -> list[int]:
    """Strides of a dense tensor of `shape` read as `out` under numpy broadcasting (0 on broadcast axes)."""
    shape = (1,) * (len(out) - len(shape)) + tuple(shape)
    return [0 if d == 1 and o != 1 else s for d, o, s in zip(shape, out, _strides(shape))]


class _Lowerer:
    def __init__(self, g: Graph, acl: bool, native: bool) -> None:
        self.g, self.acl, self.native = g, acl, native
        self.plan = plan_memory(g, align=ALIGN)
        self.out = Lowered(g, self.plan, Blob())
        for t in g.outputs:
            if g.is_constant(t) or t not in self.plan.offsets:
                raise BackendError(f"graph output {t!r} is a constant; nothing computes it")

    # -- operands -------------------------------------------------------------------------
    def info(self, t: str) -> TensorInfo:
        return self.g.tensors[t]

    def ptr(self, t: str, const: bool = True) -> str:
        """A C++ expression for tensor t's data: in the arena, or in the weights blob."""
        info = self.info(t)
        ty = cpp_type(info)
        if self.g.is_constant(t):
            off = self.out.blob.add(np.ascontiguousarray(self.g.constants[t], info.dtype))
            return f"c<{ty}>({off})"
        return f"t<{ty}>({self.plan.offsets[t]})"

    def const_array(self, a: np.ndarray, ty: str) -> str:
        off = self.out.blob.add(np.ascontiguousarray(a, {"int64_t": np.int64, "int32_t": np.int32, "uint8_t": np.uint8}[ty]))
        return f"c<{ty}>({off})"

    def emit(self, node: Node, kernel: str, lines: list[str]) -> None:
        index = len(self.out.kernels)
        self.out.kernels[node.name] = kernel
        self.out.body.append(f"// {c_string(node.name)}: {node.op} -> {kernel}")
        self.out.body.append("{ const auto t0_ = std::chrono::steady_clock::now();")
        self.out.body.extend(f"  {line}" for line in lines)
        self.out.body.append(
            f"  if (profile_) (*profile_)[{index}] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count(); }}"
        )

    def scratch(self, nbytes: int) -> None:
        self.out.scratch_bytes = max(self.out.scratch_bytes, -(-nbytes // ALIGN) * ALIGN)

    def requant_call(self, node: Node, x: str, tx: str, view: str, y: str, ty: str, p: RequantPlan) -> str:
        self.out.lanes[node.name] = p.lanes if tx == "int32_t" else "int64"
        m64, b64 = self.const_array(p.mul, "int64_t"), self.const_array(p.bias, "int64_t")
        fits = lambda a: -I32 <= int(a.min(initial=0)) and int(a.max(initial=0)) < I32  # noqa: E731
        m32 = self.const_array(p.mul.astype(np.int32), "int32_t") if fits(p.mul) else "nullptr"
        b32 = self.const_array(p.bias.astype(np.int32), "int32_t") if p.lanes == "int32" else "nullptr"
        return (
            f"requant<{tx}, {ty}>({x}, {y}, {view}, {m64}, {b64}, {m32}, {b32}, "
            f"{'true' if p.per_channel else 'false'}, {p.shift}, {cpp_int(p.lo)}, {cpp_int(p.hi)});"
        )

    def native_stage(self, node: Node, p: RequantPlan) -> tuple[str, int] | None:
        """The arguments of `AclGemm::configure_native` after the B matrix (bias, qm, shifts, zo, lo,
        hi) and zo, or None when the layer cannot use ARM-CL's fixed-point output stage: it needs positive
        multipliers below 2^31 and an output range inside [-128, 127] or [0, 255].
        ACL computes clamp(round(SRDHM(acc + B, qm) >> s) + zo) with qm = mul << (31 - b),
        b = bits of mul, s = shift - b and B = round((add + bias*mul) / mul): close to
        RequantShift, not equal to it (two roundings, B rounded)."""
        zo = 128 if p.lo < 0 else 0
        if not (
            self.native
            and p.per_channel
            and p.lo + zo >= 0
            and p.hi + zo <= 255
            and int(p.mul.min(initial=1)) > 0
            and int(p.mul.max(initial=0)) < I32
        ):
            return None
        add = p.bias - (1 << p.shift) // 2
        b_acl = (2 * add + p.mul) // (2 * p.mul)  # round half up
        if int(np.abs(b_acl).max(initial=0)) >= I32:
            return None
        bits = np.array([int(v).bit_length() for v in p.mul])
        qm = p.mul << (31 - bits)
        shifts = p.shift - bits
        self.out.lanes[node.name] = "acl-fixed-point"
        return (
            f"{self.const_array(b_acl.astype(np.int32), 'int32_t')}, {self.const_array(qm.astype(np.int32), 'int32_t')}, "
            f"{self.const_array(shifts.astype(np.int32), 'int32_t')}, {zo}, {p.lo}, {p.hi}",
            zo,
        )

    def acl_layer(self, node: Node, x: TensorInfo, bmat: np.ndarray, m: int, plan: RequantPlan) -> tuple[str, int | None] | None:
        """Configure an ACL GEMMLowp layer for A (m x K, activations of type x) @ bmat (K x N, the
        constant weights), or None when the operands are not 8-bit. Returns the layer's member name
        and, with the native output stage, its output offset zo (None: exact, our requantiser)."""
        lo, hi = int(bmat.min(initial=0)), int(bmat.max(initial=0))
        b_shift = 128 if lo < 0 else 0
        if not (self.acl and x.bits <= 8 and not x.is_float and lo + b_shift >= 0 and hi + b_shift <= 255):
            return None
        k, n = bmat.shape
        a_shift = 128 if x.signed else 0
        g = f"g{self.out.acl_layers}_"
        self.out.acl_layers += 1
        self.out.members.append(f"AclGemm {g};")
        head = f"{m}, {k}, {n}, {a_shift}, {b_shift}, {self.const_array((bmat + b_shift).astype(np.uint8), 'uint8_t')}"
        native = self.native_stage(node, plan)
        if native is None:
            self.out.setup.append(f"{g}.configure({head}, mm_);")
            return g, None
        args, zo = native
        self.out.setup.append(f"{g}.configure_native({head}, {args}, mm_);")
        return g, zo

    @staticmethod
    def dense_view(p: RequantPlan) -> str:
        o, c, i = p.view
        return f"View3{{{o}, {c}, {i}, {c * i}, {i}, 1, {c * i}, {i}, 1}}"

    # -- nodes ----------------------------------------------------------------------------
    def lower(self) -> Lowered:
        for node in self.g.nodes:
            op = op_for(node)
            handler = getattr(self, f"_{node.op}", None)
            if handler is None:
                raise BackendError(f"no C++ lowering for op {node.op}", where=node.where())
            try:
                handler(node, op)
            except BackendError as e:
                raise BackendError(e.message, where=e.where or node.where()) from None
        return self.out

    def constants(self, *names: str) -> list[np.ndarray]:
        for t in names:
            if not self.g.is_constant(t):
                raise BackendError(f"requantisation constant {t!r} is computed at run time; the generator needs it constant")
        return [self.g.constants[t] for t in names]

    def _requant_parts(self, node: Node, op, mul: str, add: str, out_shape, x_bound, bias) -> RequantPlan:
        mv, av = self.constants(mul, add)
        return plan_requant(out_shape, mv, av, op.div, op.lo, op.hi, x_bound, bias)

    def _RequantShift(self, node: Node, op) -> None:
        x, mul, add = node.inputs
        xi, yi = self.info(x), self.info(node.outputs[0])
        p = self._requant_parts(node, op, mul, add, xi.shape, magnitude(xi), None)
        self.emit(
            node,
            "requant",
            [self.requant_call(node, self.ptr(x), cpp_type(xi), self.dense_view(p), self.ptr(node.outputs[0]), cpp_type(yi), p)],
        )

    # Conv, ConvRequant ---------------------------------------------------------------------
    def _Conv(self, node: Node, op) -> None:
        self._conv(node, op, node.inputs[:3], None)

    def _ConvRequant(self, node: Node, op) -> None:
        self._conv(node, op.conv, node.inputs[:3], (node.inputs[3], node.inputs[4], op))

    def _conv(self, node: Node, conv, ins, requant) -> None:
        x, w = ins[0], ins[1]
        b = ins[2] if len(ins) > 2 and ins[2] else None
        xi, yi = self.info(x), self.info(node.outputs[0])
        if not self.g.is_constant(w):
            raise BackendError("convolution weights computed at run time are not supported by the generator")
        wv = self.g.constants[w].astype(np.int64)
        if b is not None and not self.g.is_constant(b):
            raise BackendError("a convolution bias computed at run time is not supported by the generator")
        bv = self.g.constants[b].astype(np.int64) if b is not None else None
        n, c, h, wd = xi.shape
        m, cg, kh, kw = wv.shape
        _, _, ho, wo = yi.shape
        pt, pl, _, _ = conv.pads  # the window starts at the top-left pads
        win = (
            f"Window{{{h}, {wd}, {kh}, {kw}, {conv.strides[0]}, {conv.strides[1]}, {conv.dilations[0]}, "
            f"{conv.dilations[1]}, {pt}, {pl}, {ho}, {wo}}}"
        )
        acc_bound = np.abs(wv).reshape(m, -1).sum(axis=1) * magnitude(xi)
        if requant is None:
            lo, hi = yi.lo, yi.hi
            plan = plan_requant(
                yi.shape,
                np.ones(1, np.int64),
                np.zeros(1, np.int64),
                1,
                lo,
                hi,
                acc_bound.astype(object),
                (bv, 1) if bv is not None else None,
            )
        else:
            mul, add, rop = requant
            plan = self._requant_parts(node, rop, mul, add, yi.shape, acc_bound.astype(object), (bv, 1) if bv is not None else None)
        if plan.axis not in (None, 1):
            raise BackendError("requantisation constants that vary along a spatial axis are not supported for convolutions")
        plan = plan.on_axis(1)
        ty = cpp_type(yi)
        hw = ho * wo
        layer = self.acl_layer(node, xi, wv.reshape(m, -1).T, hw, plan) if conv.group == 1 else None
        if layer is not None:
            g, zo = layer
            y = f"{self.ptr(node.outputs[0])} + n * {m * hw}"
            finish = (
                f"from_native({g}, {m}, {zo}, {y}, 1, {hw});"
                if zo is not None
                else self.requant_call(
                    node, f"{g}.acc()", "int32_t", f"View3{{1, {m}, {hw}, 0, 1, {g}.acc_row_stride(), 0, {hw}, 1}}", y, ty, plan
                )
            )
            self.emit(
                node,
                "acl-native" if zo is not None else "acl-gemmlowp",
                [
                    f"for (int64_t n = 0; n < {n}; ++n) {{",
                    f"  im2col({self.ptr(x)} + n * {c * h * wd}, {c}, {win}, {g});",
                    f"  {g}.run();",
                    f"  {finish}",
                    "}",
                ],
            )
            return
        tacc = "int32_t" if int(acc_bound.max(initial=0)) < (1 << 31) else "int64_t"
        self.scratch(m * hw * (4 if tacc == "int32_t" else 8))
        mg = m // conv.group
        view = f"View3{{1, {m}, {hw}, 0, {hw}, 1, 0, {hw}, 1}}"
        lines = [
            f"for (int64_t n = 0; n < {n}; ++n) {{",
            f"  {tacc}* acc = reinterpret_cast<{tacc}*>(scratch_.data());",
            f"  for (int64_t m = 0; m < {m}; ++m)",
            f"    conv_plane({self.ptr(x)} + n * {c * h * wd} + (m / {mg}) * {cg * h * wd}, {self.ptr(w)} + m * {cg * kh * kw}, "
            f"{cg}, {win}, acc + m * {hw});",
            "  " + self.requant_call(node, "acc", tacc, view, f"{self.ptr(node.outputs[0])} + n * {m * hw}", ty, plan),
            "}",
        ]
        self.emit(node, "depthwise" if cg == 1 and conv.group == c == m else "direct-conv", lines)

    # Gemm, GemmRequant, MatMul, MatMulRequant ---------------------------------------------
    def _Gemm(self, node: Node, op) -> None:
        self._product(node, node.inputs[0], node.inputs[1], node.inputs[2] if len(node.inputs) > 2 else "", op.trans_a, op.trans_b, None)

    def _GemmRequant(self, node: Node, op) -> None:
        self._product(node, node.inputs[0], node.inputs[1], node.inputs[2], op.trans_a, op.trans_b, (node.inputs[3], node.inputs[4], op))

    def _MatMul(self, node: Node, op) -> None:
        self._product(node, node.inputs[0], node.inputs[1], "", False, False, None)

    def _MatMulRequant(self, node: Node, op) -> None:
        self._product(node, node.inputs[0], node.inputs[1], "", False, False, (node.inputs[2], node.inputs[3], op))

    def _product(self, node: Node, a: str, b: str, c: str, trans_a: bool, trans_b: bool, requant) -> None:
        ai, bi, yi = self.info(a), self.info(b), self.info(node.outputs[0])
        y = node.outputs[0]
        ty = cpp_type(yi)
        batched = len(ai.shape) > 2 or len(bi.shape) > 2
        if batched and (len(bi.shape) != 2 or trans_a):
            return self._batched_matmul(node, a, b, requant)
        # a 2-D product: A (M, K) (leading axes of a MatMul's `a` fold into M), B (K, N)
        if trans_a:
            k_, m_ = ai.shape
        else:
            m_, k_ = math.prod(ai.shape[:-1]), ai.shape[-1]
        n_ = bi.shape[0] if trans_b else bi.shape[1]
        out2 = (m_, n_)
        b_const = self.g.is_constant(b)
        c_const = not c or self.g.is_constant(c)
        bias = None
        if c and c_const:
            cv = np.broadcast_to(self.g.constants[c].astype(np.int64), out2)
            if (cv == cv[:1]).all():
                bias = (cv[0].copy(), 1)
            else:
                c_const = False
        if b_const:
            bm = self.g.constants[b].astype(np.int64)
            bm = bm.T if trans_b else bm
            acc_bound = (np.abs(bm).sum(axis=0) * magnitude(ai)).astype(object)
        else:
            acc_bound = np.asarray(magnitude(ai) * magnitude(bi) * k_, dtype=object)
        if not c_const:
            acc_bound = acc_bound + magnitude(self.info(c))
        if requant is None:
            plan = plan_requant(out2, np.ones(1, np.int64), np.zeros(1, np.int64), 1, yi.lo, yi.hi, acc_bound, bias)
        else:
            mul, add, rop = requant
            mv, av = (np.broadcast_to(v, yi.shape).reshape(out2) for v in self.constants(mul, add))
            plan = plan_requant(out2, mv, av, rop.div, rop.lo, rop.hi, acc_bound, bias)
        layer = (
            self.acl_layer(node, ai, bm, m_, plan.on_axis(1)) if b_const and c_const and not trans_a and plan.axis in (None, 1) else None
        )
        if layer is not None:
            g, zo = layer
            finish = (
                f"from_native({g}, {n_}, {zo}, {self.ptr(y)}, {n_}, 1);"
                if zo is not None
                else self.requant_call(
                    node,
                    f"{g}.acc()",
                    "int32_t",
                    f"View3{{{m_}, {n_}, 1, {g}.acc_row_stride(), 1, 0, {n_}, 1, 0}}",
                    self.ptr(y),
                    ty,
                    plan.on_axis(1),
                )
            )
            self.emit(
                node,
                "acl-native" if zo is not None else "acl-gemmlowp",
                [f"rows_to_a({self.ptr(a)}, {m_}, {k_}, {g});", f"{g}.run();", finish],
            )
            return
        tacc = "int32_t" if int(np.max(acc_bound)) < (1 << 31) else "int64_t"
        self.scratch(m_ * n_ * (4 if tacc == "int32_t" else 8))
        sam, sak = (1, m_) if trans_a else (k_, 1)
        sbk, sbn = (1, k_) if trans_b else (n_, 1)
        lines = [
            f"{tacc}* acc = reinterpret_cast<{tacc}*>(scratch_.data());",
            f"gemm_direct({self.ptr(a)}, {sam}, {sak}, {self.ptr(b)}, {sbk}, {sbn}, {m_}, {k_}, {n_}, acc);",
        ]
        if not c_const:
            st = _broadcast_strides(self.info(c).shape, out2)
            lines.append(
                f"{{ const int64_t sc[] = {_arr(st)}; const int64_t sa[] = {_arr(_strides(out2))}; "
                f"add_nd(acc, sa, {self.ptr(c)}, sc, acc, {_nd(out2)}); }}"
            )
        o, ch, i = plan.view
        view = f"View3{{{o}, {ch}, {i}, {ch * i}, {i}, 1, {ch * i}, {i}, 1}}"
        lines.append(self.requant_call(node, "acc", tacc, view, self.ptr(y), ty, plan))
        self.emit(node, "direct-gemm", lines)

    def _batched_matmul(self, node: Node, a: str, b: str, requant) -> None:
        ai, bi, yi = self.info(a), self.info(b), self.info(node.outputs[0])
        batch = yi.shape[:-2]
        m_, k_, n_ = ai.shape[-2], ai.shape[-1], bi.shape[-1]
        a_st = _broadcast_strides(ai.shape[:-2], batch)
        b_st = _broadcast_strides(bi.shape[:-2], batch)
        nb = math.prod(batch)
        self.scratch(nb * m_ * n_ * 8)
        idx = np.indices(batch).reshape(len(batch), -1).T if batch else np.zeros((1, 0), np.int64)
        a_off = [int(np.dot(i, a_st)) * m_ * k_ for i in idx] if batch else [0]
        b_off = [int(np.dot(i, b_st)) * k_ * n_ for i in idx] if batch else [0]
        lines = [
            "int64_t* acc = reinterpret_cast<int64_t*>(scratch_.data());",
            f"{{ static const int64_t ao[] = {_arr(a_off)}, bo[] = {_arr(b_off)};",
            f"  for (int64_t q = 0; q < {nb}; ++q) gemm_direct({self.ptr(a)} + ao[q], {k_}, 1, {self.ptr(b)} + bo[q], {n_}, 1, "
            f"{m_}, {k_}, {n_}, acc + q * {m_ * n_}); }}",
        ]
        if requant is None:
            plan = plan_requant(yi.shape, np.ones(1, np.int64), np.zeros(1, np.int64), 1, yi.lo, yi.hi, 1 << 62)
        else:
            mul, add, rop = requant
            plan = self._requant_parts(node, rop, mul, add, yi.shape, 1 << 62, None)
        lines.append(self.requant_call(node, "acc", "int64_t", self.dense_view(plan), self.ptr(node.outputs[0]), cpp_type(yi), plan))
        self.emit(node, "direct-gemm", lines)

    # pools ---------------------------------------------------------------------------------
    def _window(self, xi: TensorInfo, yi: TensorInfo, kernel, strides, dilations, pads) -> str:
        return (
            f"Window{{{xi.shape[2]}, {xi.shape[3]}, {kernel[0]}, {kernel[1]}, {strides[0]}, {strides[1]}, "
            f"{dilations[0]}, {dilations[1]}, {pads[0]}, {pads[1]}, {yi.shape[2]}, {yi.shape[3]}}}"
        )

    def _MaxPool(self, node: Node, op) -> None:
        (x,), (y,) = node.inputs, node.outputs
        xi, yi = self.info(x), self.info(y)
        win = self._window(xi, yi, op.kernel_shape, op.strides, op.dilations, op.pads)
        self.emit(node, "max-pool", [f"max_pool({self.ptr(x)}, {self.ptr(y)}, {xi.shape[0] * xi.shape[1]}, {win});"])

    def _SumPool(self, node: Node, op) -> None:
        (x,), (y,) = node.inputs, node.outputs
        xi, yi = self.info(x), self.info(y)
        win = self._window(xi, yi, op.kernel_shape, op.strides, (1, 1), op.pads)
        self.emit(node, "sum-pool", [f"sum_pool({self.ptr(x)}, {self.ptr(y)}, {xi.shape[0] * xi.shape[1]}, {win});"])

    def _GlobalSumPool(self, node: Node, op) -> None:
        (x,), (y,) = node.inputs, node.outputs
        xi = self.info(x)
        self.emit(
            node, "sum-pool", [f"global_sum_pool({self.ptr(x)}, {self.ptr(y)}, {xi.shape[0] * xi.shape[1]}, {xi.shape[2] * xi.shape[3]});"]
        )

    # elementwise ---------------------------------------------------------------------------
    def _Add(self, node: Node, op) -> None:
        a, b = node.inputs
        y = node.outputs[0]
        shape = self.info(y).shape
        sa, sb = _broadcast_strides(self.info(a).shape, shape), _broadcast_strides(self.info(b).shape, shape)
        self.emit(
            node,
            "add",
            [
                f"{{ const int64_t sa[] = {_arr(sa or [0])}, sb[] = {_arr(sb or [0])};",
                f"  add_nd({self.ptr(a)}, sa, {self.ptr(b)}, sb, {self.ptr(y)}, {_nd(shape)}); }}",
            ],
        )

    def _Clip(self, node: Node, op) -> None:
        (x,), (y,) = node.inputs, node.outputs
        self.emit(node, "clip", [f"clip({self.ptr(x)}, {self.ptr(y)}, {self.info(y).size}, {cpp_int(op.lo)}, {cpp_int(op.hi)});"])

    def _RequantAdd(self, node: Node, op) -> None:
        a, b = node.inputs
        y = node.outputs[0]

        def term(mul, add, div, rq):
            return f"RequantTerm{{{'true' if rq else 'false'}, {cpp_int(mul)}, {cpp_int(add + div // 2)}, {int(div).bit_length() - 1}}}"

        self.emit(
            node,
            "requant-add",
            [
                f"requant_add({self.ptr(a)}, {self.ptr(b)}, {self.ptr(y)}, {self.info(y).size}, "
                f"{term(op.in1_mul, op.in1_add, op.in1_div, op.in1_rq)}, {term(op.in2_mul, op.in2_add, op.in2_div, op.in2_rq)}, "
                f"{term(op.out_mul, op.out_add, op.out_div, op.out_rq)}, {cpp_int(op.lo)}, {cpp_int(op.hi)});"
            ],
        )

    def _Quantise(self, node: Node, op) -> None:
        (x,), (y,) = node.inputs, node.outputs
        mode = {"floor": 0, "half_up": 1, "round": 2}[op.rounding]
        eps = float(np.float32(op.eps))
        self.emit(
            node,
            "quantise",
            [f"quantise({self.ptr(x)}, {self.ptr(y)}, {self.info(y).size}, {eps!r}f, {cpp_int(op.lo)}, {cpp_int(op.hi)}, {mode});"],
        )

    # data movement -------------------------------------------------------------------------
    def _copy(self, node: Node) -> None:
        (x,), (y,) = node.inputs[:1], node.outputs
        size = self.info(y).size
        st = _arr([1])
        self.emit(node, "copy", [f"{{ const int64_t s[] = {st}; copy_nd({self.ptr(x)}, s, {self.ptr(y)}, s, Nd{{1, {{{size}}}}}); }}"])

    def _Flatten(self, node: Node, op) -> None:
        self._copy(node)

    def _Reshape(self, node: Node, op: Reshape) -> None:
        self._copy(node)

    def _Transpose(self, node: Node, op) -> None:
        (x,), (y,) = node.inputs, node.outputs
        xs = _strides(self.info(x).shape)
        ys = self.info(y).shape
        sx = [xs[p] for p in op.perm]
        self.emit(
            node,
            "transpose",
            [
                f"{{ const int64_t sx[] = {_arr(sx or [0])}, sy[] = {_arr(_strides(ys) or [0])};",
                f"  copy_nd({self.ptr(x)}, sx, {self.ptr(y)}, sy, {_nd(ys)}); }}",
            ],
        )

    def _Concat(self, node: Node, op) -> None:
        y = node.outputs[0]
        yshape = self.info(y).shape
        ax = op.axis % len(yshape)
        ys = _strides(yshape)
        lines, start = [], 0
        for x in node.inputs:
            xshape = self.info(x).shape
            lines.append(f"{{ const int64_t sx[] = {_arr(_strides(xshape))}, sy[] = {_arr(ys)};")
            lines.append(f"  copy_nd({self.ptr(x)}, sx, {self.ptr(y)} + {start * ys[ax]}, sy, {_nd(xshape)}); }}")
            start += xshape[ax]
        self.emit(node, "concat", lines)

    def _Pad(self, node: Node, op) -> None:
        (x,), (y,) = node.inputs, node.outputs
        xi, yi = self.info(x), self.info(y)
        src = np.arange(xi.size, dtype=np.int64).reshape(xi.shape)
        rank = len(xi.shape)
        width = [(op.pads[i], op.pads[i + rank]) for i in range(rank)]
        if op.mode == "constant":
            index = np.pad(src, width, mode="constant", constant_values=-1)
        else:
            index = np.pad(src, width, mode=op.mode)
        if index.size and index.max() >= (1 << 31):
            raise BackendError("Pad input too large for the generator's int32 index table")
        self.emit(
            node,
            "pad",
            [
                f"gather({self.ptr(x)}, {self.const_array(index.astype(np.int32), 'int32_t')}, {yi.size}, "
                f"{self.ptr(y)}, {cpp_int(op.value)});"
            ],
        )


def lower(g: Graph, acl: bool = True, native: bool = False) -> Lowered:
    """C++ for every node of `g`; `acl` routes 8-bit products through ARM Compute Library, `native`
    lets them end in ACL's fixed-point output stage where they can (`target.output_stage: armcl-native`)."""
    return _Lowerer(g, acl, native).lower()
