"""`IntegerNet`: the true-quantised network F2T produces, as plain data, and its PyTorch module (rung TQ).

An `IntegerNet` is an ordered chain of `Layer`s over named integer tensors. Every tensor carries a
`TensorSpec`: its shape (batch 1), its eps (the real value is ``eps * integer``; shape ``()`` or
``(C,)`` per channel on axis 1), its integer range ``[lo, hi]``, signedness and, for quantiser
outputs, ``n_levels``. Constants are integer numpy arrays (int64). Layer ops and their exact meaning:

- ``Conv``: consts ``weight`` ``(O, I/groups, kh, kw)``, optional ``bias`` ``(O,)``; attrs ``stride``,
  ``padding`` (symmetric, as torch), ``dilation``, ``groups``. Exact integer accumulation.
- ``Gemm``: consts ``weight`` ``(O, I)``, optional ``bias``: ``y = x @ weight.T + bias``, exact.
- ``RequantShift``: consts ``mul``, ``add`` (shape ``()`` or ``(C,)`` on axis 1); attrs ``div = 2**D``,
  ``n_levels``, ``signed``, ``lo``, ``hi``, ``mean_k``:
  ``y = clip(floor((x*mul + add) / div), lo, hi)``, computed in int64. NOTE: `add` is in the *floor*
  form (DORY's spelling: any rounding half is already inside it); the Deeploy spelling, whose
  RequantShift adds ``div/2`` itself, writes ``add - div/2``. ``mean_k > 1`` says the input is the
  sum of ``mean_k`` values of an average pool: exports that spell the pool as a mean (ONNX
  AveragePool) write ``mul * mean_k`` (QuantLab's AlignAvgPoolPass form).
- ``SumPool``: attrs ``kernel``, ``stride``, ``padding``, ``global_`` (bool), ``k``: the window sums
  (windows include the zero padding, every window has ``k`` values).
- ``MaxPool``: attrs ``kernel``, ``stride``, ``padding``, ``dilation``, ``ceil_mode``.
- ``Flatten``: ``(N, C, H, W) -> (N, C*H*W)``.

The input quantiser (not a layer: the integer input is the graph input) is
``q = clip(floor(x / eps_in), lo, hi)`` (``round`` half to even instead of floor when
``input_rounding == 'round'``), computed in float32 as the fake-quantised net does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class TensorSpec:
    """One integer tensor: name, shape (batch 1), eps (``()`` or ``(C,)``), range, signedness, levels."""

    name: str
    shape: tuple[int, ...]
    eps: np.ndarray
    lo: int
    hi: int
    signed: bool
    n_levels: int | None = None

    @property
    def bits(self) -> int:
        """Bits of the smallest container of [lo, hi] (8 for a 256-level quantiser, 32 for accumulators)."""
        if self.n_levels is not None:
            return int(np.ceil(np.log2(self.n_levels)))
        return 32

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary (eps as a float or a list)."""
        eps = self.eps.tolist()
        return {"shape": list(self.shape), "eps": eps, "lo": self.lo, "hi": self.hi, "signed": self.signed,
                "n_levels": self.n_levels, "bits": self.bits}


@dataclass(frozen=True)
class Layer:
    """One integer layer: ``op`` on tensor ``input`` giving ``output`` (see the module docstring)."""

    op: str
    input: str
    output: TensorSpec
    consts: Mapping[str, np.ndarray] = field(default_factory=dict)
    attrs: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""  # the fx node / module of the fake-quantised net it comes from


@dataclass(frozen=True)
class IntegerNet:
    """The true-quantised network: input quantiser, layers, the requantisation divisor's bits."""

    input: TensorSpec
    input_rounding: str
    layers: tuple[Layer, ...]
    requant_bits: int

    @property
    def output(self) -> TensorSpec:
        return self.layers[-1].output if self.layers else self.input

    @property
    def output_eps(self) -> np.ndarray:
        """eps of the integer output: real output = output_eps * integer output (per channel on axis 1)."""
        return self.output.eps

    @property
    def input_eps(self) -> float:
        return float(self.input.eps)

    def tensors(self) -> dict[str, TensorSpec]:
        return {self.input.name: self.input, **{l.output.name: l.output for l in self.layers}}

    def quantise_input(self, x: Tensor) -> Tensor:
        """The integer input (int64) for float input `x`, exactly as the fake-quantised input quantiser."""
        eps = torch.tensor(self.input_eps, dtype=torch.float32)
        v = x.to(torch.float32) / eps
        q = torch.floor(v) if self.input_rounding == "floor" else torch.round(v)
        return q.clamp(self.input.lo, self.input.hi).to(torch.int64)

    def module(self) -> "TQNet":
        """The PyTorch module computing this network on integer inputs (rung TQ)."""
        return TQNet(self)

    @torch.no_grad()
    def run(self, x: Tensor) -> Tensor:
        """Integer output (int64) for float input `x`: quantise, then the TQ module."""
        return self.module()(self.quantise_input(x))


# --------------------------------------------------------------------------------------------------
# the TQ module: float64 for exact integer convolutions (sums stay far below 2**53), int64 requant


class _Conv(nn.Module):
    def __init__(self, layer: Layer) -> None:
        super().__init__()
        self.register_buffer("weight", torch.from_numpy(layer.consts["weight"].astype(np.float64)))
        b = layer.consts.get("bias")
        self.register_buffer("bias", None if b is None else torch.from_numpy(b.astype(np.float64)))
        self.kw = {k: tuple(layer.attrs[k]) if k != "groups" else layer.attrs[k] for k in ("stride", "padding", "dilation", "groups")}

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, **self.kw)


class _Gemm(nn.Module):
    def __init__(self, layer: Layer) -> None:
        super().__init__()
        self.register_buffer("weight", torch.from_numpy(layer.consts["weight"].astype(np.float64)))
        b = layer.consts.get("bias")
        self.register_buffer("bias", None if b is None else torch.from_numpy(b.astype(np.float64)))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)


class _Requant(nn.Module):
    """``clip(floor((x*mul + add) / 2**D), lo, hi)`` in int64 (F2T checks that nothing can overflow)."""

    def __init__(self, layer: Layer, ndim: int) -> None:
        super().__init__()
        shape = (-1,) + (1,) * (ndim - 2)
        for k in ("mul", "add"):
            v = torch.from_numpy(np.asarray(layer.consts[k], np.int64).copy())
            self.register_buffer(k, v.reshape(shape) if v.dim() else v)
        self.shift = int(layer.attrs["div"]).bit_length() - 1
        self.lo, self.hi = int(layer.attrs["lo"]), int(layer.attrs["hi"])

    def forward(self, x: Tensor) -> Tensor:
        acc = x.to(torch.int64) * self.mul + self.add
        return (acc >> self.shift).clamp(self.lo, self.hi).to(torch.float64)


class _SumPool(nn.Module):
    def __init__(self, layer: Layer) -> None:
        super().__init__()
        self.a = dict(layer.attrs)

    def forward(self, x: Tensor) -> Tensor:
        if self.a["global_"]:
            return x.sum(dim=(2, 3), keepdim=True)
        return F.avg_pool2d(x, tuple(self.a["kernel"]), tuple(self.a["stride"]), tuple(self.a["padding"]),
                            ceil_mode=False, count_include_pad=True, divisor_override=1)


class _MaxPool(nn.Module):
    def __init__(self, layer: Layer) -> None:
        super().__init__()
        self.a = dict(layer.attrs)

    def forward(self, x: Tensor) -> Tensor:
        a = self.a
        return F.max_pool2d(x, tuple(a["kernel"]), tuple(a["stride"]), tuple(a["padding"]), tuple(a["dilation"]), a["ceil_mode"])


class _Flatten(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(x, 1)


class TQNet(nn.Module):
    """Rung TQ: the `IntegerNet` in PyTorch. Input: the integer input (any integer or integer-valued
    dtype, shape ``(N, ...)``); output: the integer output, int64. Exact: convolutions and linears in
    float64 on integers (every partial sum below 2**53), requantisation in int64."""

    def __init__(self, net: IntegerNet) -> None:
        super().__init__()
        mods = []
        for layer in net.layers:
            ndim = len(net.tensors()[layer.input].shape)
            mods.append({"Conv": lambda: _Conv(layer), "Gemm": lambda: _Gemm(layer),
                         "RequantShift": lambda: _Requant(layer, ndim), "SumPool": lambda: _SumPool(layer),
                         "MaxPool": lambda: _MaxPool(layer), "Flatten": _Flatten}[layer.op]())
        self.layers = nn.ModuleList(mods)
        self.names = [l.output.name for l in net.layers]

    def forward(self, q: Tensor, *, keep: bool = False) -> Tensor | dict[str, Tensor]:
        """The int64 output; with `keep`, every layer's output by tensor name (int64)."""
        x = q.to(torch.float64)
        seen = {}
        for name, m in zip(self.names, self.layers):
            x = m(x)
            if keep:
                seen[name] = x.to(torch.int64)
        return seen if keep else x.to(torch.int64)
