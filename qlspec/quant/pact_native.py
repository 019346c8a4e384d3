"""PACTQuantFunc's arithmetic for one pair of bounds as two fused C loops (`pact_kernel.c`).

The torch path makes four passes over an activation forward (divide, round, clamp, multiply) and two
backward, where the float network's ReLU makes one each; that was most of what a PACT step costs
over a float step (bench/RESULTS.md). `pact_kernel.c` does the same IEEE float32 operations in one
pass each way. `forward` and `backward` return None whenever the kernel cannot take the call, and
the caller then runs the torch path:

- the library is not built (`qlspec.native.load`: no compiler, ``QLSPEC_NATIVE=0``), or it failed
  `agrees_with_torch`, a check run once per process on the edge values of every rule;
- a tensor is not float32 on the CPU, or not dense (contiguous in NCHW or channels-last order: the
  loops walk memory, so both orders are the same loop), or the bounds are not single values;
- torch.compile is tracing (a foreign call would break its graph).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from qlspec import native

SOURCE = Path(__file__).with_name("pact_kernel.c")
RULE_CODES = {"floor": 0, "half_up": 1, "half_even": 2}
_off = False


def declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    """`lib` (built from `SOURCE`) with its two functions' C signatures set."""
    f, i64, ptr, i32 = ctypes.c_float, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    lib.pact_forward.argtypes = [ptr, ptr, i64, f, f, f, f, f, i32, i32]
    lib.pact_forward.restype = None
    lib.pact_backward.argtypes = [ptr, ptr, ptr, i64, f, f, ptr, i32]
    lib.pact_backward.restype = None
    return lib


@functools.cache
def _kernel() -> ctypes.CDLL | None:
    lib = native.load(SOURCE)
    if lib is None:
        return None
    declare(lib)
    if not agrees_with_torch(lib):
        native.unavailable[SOURCE.name] = "the built kernel disagrees with torch on the check values (compiler flags?)"
        return None
    return lib


def available() -> bool:
    """Whether the kernel is built, loaded and checked (the reason otherwise: ``native.unavailable``)."""
    return _kernel() is not None


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Within the block every call takes the torch path (tests and benches compare the two)."""
    global _off
    before, _off = _off, True
    try:
        yield
    finally:
        _off = before


def describe() -> str:
    """Which path PACT's activations take here, in words (benches and logs print it)."""
    if available():
        return f"fused C kernel ({SOURCE.name})"
    return f"torch ({native.unavailable.get(SOURCE.name, 'kernel unavailable')})"


def _dense(t: Tensor) -> bool:
    return (
        t.dtype == torch.float32
        and t.device.type == "cpu"
        and (t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)))
    )


def _usable(x: Tensor) -> ctypes.CDLL | None:
    """The library, when it may take `x`."""
    if _off or not _dense(x) or torch.compiler.is_compiling():
        return None
    return _kernel()


def forward(x: Tensor, eps: float, lo: float, hi: float, q_lo: int, q_hi: int, rule: str) -> Tensor | None:
    """``clip(rule(x/eps), q_lo, q_hi) * eps`` pinned at the bounds (PACTQuantFunc), x's layout; or None."""
    lib = _usable(x)
    if lib is None:
        return None
    y = torch.empty_like(x)
    lib.pact_forward(x.data_ptr(), y.data_ptr(), x.numel(), eps, lo, hi, q_lo, q_hi, RULE_CODES[rule], torch.get_num_threads())
    return y


def backward(x: Tensor, grad: Tensor, lo: float, hi: float, need_x: bool) -> tuple[Tensor | None, float, float] | None:
    """``(dL/dx or None, sum of grad where x < lo, sum where x >= hi)``; or None."""
    lib = _usable(x)
    if lib is None:
        return None
    if grad.stride() != x.stride() or not _dense(grad):
        grad = torch.empty_like(x).copy_(grad)  # another layout (or an expanded gradient): x's order
    grad_x = torch.empty_like(x) if need_x else None
    out = grad_x.data_ptr() if grad_x is not None else None
    sums = (ctypes.c_double * 2)()
    lib.pact_backward(x.data_ptr(), grad.data_ptr(), out, x.numel(), lo, hi, sums, torch.get_num_threads())
    return grad_x, sums[0], sums[1]


def agrees_with_torch(lib: ctypes.CDLL) -> bool:
    """The kernel's forward codes and backward masks equal torch's, serially and on the threaded path,
    on: the bounds, their float neighbours and infinities; multiples of eps and halves between them
    with their neighbours (where a reciprocal instead of a division, or another rounding, shows); and
    bounds inside the outer codes, so that pinning at the bounds is not the clamp's work. A
    miscompiled build, or flags that loosen IEEE arithmetic, fail this."""
    from qlspec.quant.pact import quantize_with_torch  # the torch path itself (pact imports this module)

    eps = torch.tensor(0.1, dtype=torch.float32)
    q_lo, q_hi = -128, 127
    lo, hi = (torch.tensor(b, dtype=torch.float32) for b in (-12.65, 12.65))  # codes -126.5 and 126.5
    up, down = torch.tensor(math.inf), torch.tensor(-math.inf)
    grid = torch.cat([torch.arange(-300, 300, dtype=torch.float32) * eps, (torch.arange(-300, 300, dtype=torch.float32) + 0.5) * eps])
    special = torch.stack([lo, hi, up, down, torch.tensor(0.0), torch.tensor(-0.0)])
    near = [v for base in (special, grid) for v in (base, torch.nextafter(base, up), torch.nextafter(base, down))]
    x = torch.cat([*near, torch.linspace(-20.0, 20.0, 200_003, dtype=torch.float32)])
    g = torch.cos(torch.arange(x.numel(), dtype=torch.float32))
    below, above = x < lo, x >= hi
    for threads in (1, 2):
        for rule, code in RULE_CODES.items():
            y = torch.empty_like(x)
            lib.pact_forward(x.data_ptr(), y.data_ptr(), x.numel(), eps.item(), lo.item(), hi.item(), q_lo, q_hi, code, threads)
            want = quantize_with_torch(x, eps, lo, hi, q_lo, q_hi, rule)
            if not torch.equal(y, want):
                return False
        gx = torch.empty_like(x)
        sums = (ctypes.c_double * 2)()
        lib.pact_backward(x.data_ptr(), g.data_ptr(), gx.data_ptr(), x.numel(), lo.item(), hi.item(), sums, threads)
        if not torch.equal(gx, torch.where(below | above, 0.0, g)):
            return False
        for got, mask in zip(sums, (below, above)):
            if abs(got - g.double()[mask].sum().item()) > 1e-9 * g.double().abs().sum().item():
                return False
    return True
