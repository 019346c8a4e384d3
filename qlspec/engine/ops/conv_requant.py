"""ConvRequant: a Conv whose accumulator goes straight into a RequantShift (made by a fusion pass)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qlspec.engine.ops.base import Op
from qlspec.engine.ops.conv import Conv
from qlspec.engine.ops.requant_shift import RequantShift, requantise_into, shift_of
from qlspec.graph.ir import TensorInfo


@dataclass(frozen=True)
class ConvRequant(Op):
    """y = RequantShift(Conv(x, w, b), mul, add), exactly: the int32 accumulator of `Conv` (its
    docstring) requantised by `RequantShift` (its docstring). Inputs (x, w, b, mul, add), b may be
    absent (""). The accumulator is never materialised in memory: a few images at a time, it goes
    through torch's int8 GEMM or float32 convolution and an int32 requantisation
    (`qlspec.engine.torch_kernels`, which states when each is exact), else from `Conv.slices`
    straight into `requantise_into`; the arithmetic is the same. The result may be an NCHW view of
    NHWC memory, which the next layer's GEMM reads without a copy.
    """

    op_type = "ConvRequant"
    n_inputs = (5, 5)
    optional = (2,)
    clips_output = True
    div: int
    lo: int
    hi: int
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    group: int = 1

    @property
    def conv(self) -> Conv:
        return Conv(strides=self.strides, pads=self.pads, dilations=self.dilations, group=self.group)

    @property
    def requant(self) -> RequantShift:
        return RequantShift(div=self.div, lo=self.lo, hi=self.hi)

    def __post_init__(self) -> None:
        _ = self.conv, self.requant  # building both halves validates their attributes

    def infer(self, ins, vals):
        (acc,) = self.conv.infer(ins[:3], vals[:3])
        return self.requant.infer([acc, ins[3], ins[4]], [None, vals[3], vals[4]])

    def macs(self, ins, outs):
        return self.conv.macs(ins[:3], outs)

    def run(self, x, w, b, mul, add):
        from qlspec.engine.torch_kernels import conv_requant  # torch loads only when a graph runs

        fast = conv_requant(self, x, w, b, mul, add)
        if fast is not None:
            return fast
        conv = self.conv
        if any(p.ndim == 4 and p.shape[0] != 1 for p in (mul, add)):  # parameters per image: no slicing
            return self.requant.run(conv.run(x, w, b), mul, add)
        shape = conv.out_shape(TensorInfo(x.shape, 32, True), TensorInfo(w.shape, 8, True))
        y = np.empty(shape, TensorInfo.for_range((), self.lo, self.hi).dtype)
        bound = conv.bound(x, w, b)
        for part, acc in conv.slices(x, w, b, bound):
            requantise_into(y[part], acc, mul, add, shift_of(self.div), self.lo, self.hi, bound)
        return y
