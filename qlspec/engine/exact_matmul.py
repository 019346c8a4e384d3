"""Exact integer matrix products, fast.

numpy has no BLAS for integer dtypes, so an int64 `@` is slow. A float BLAS product is exact
whenever every partial sum is an integer that the float format represents exactly: below 2^24 in
magnitude for float32, 2^53 for float64. Then no product or sum is ever rounded, in whatever
order the BLAS adds them (fused multiply-adds included). Every partial sum is bounded by
K * max|a| * max|b|, which is checked on the actual values to pick float32, float64 or, failing
both, int64 arithmetic (exact while that bound stays below 2^63, also checked).
"""

from __future__ import annotations

import numpy as np

from qlspec.errors import GraphError

F32_EXACT = 1 << 24  # float32 holds every integer below this exactly
_F64_EXACT = 1 << 53
_I64_LIMIT = 1 << 63


def max_abs(a: np.ndarray) -> int:
    return max(abs(int(a.min())), abs(int(a.max()))) if a.size else 0


def exact_dtype(bound: int) -> np.dtype:
    """The cheapest dtype in which sums of products bounded by `bound` are computed exactly."""
    if bound < F32_EXACT:
        return np.dtype(np.float32)
    if bound < _F64_EXACT:
        return np.dtype(np.float64)
    if bound < _I64_LIMIT:
        return np.dtype(np.int64)
    raise GraphError(f"integer sum of products may exceed int64 (bound {bound})")


def exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`a @ b` (numpy matmul broadcasting) computed exactly, returned as int64.

    Float products go through torch's BLAS: it shares its thread pool with the engine's other torch
    kernels, where numpy's OpenBLAS would leave threads spinning after every product, stealing the
    cores those kernels run on (the engine ran 2x slower on two threads than on one because of it)."""
    dt = exact_dtype(a.shape[-1] * max_abs(a) * max_abs(b))
    if dt.kind == "f" and torch_float_is_exact():
        import torch

        return (torch.from_numpy(a.astype(dt)) @ torch.from_numpy(b.astype(dt))).numpy().astype(np.int64)
    return (a.astype(dt, copy=False) @ b.astype(dt, copy=False)).astype(np.int64)


def torch_float_is_exact() -> bool:
    """True unless the user let torch round float32 products or convolutions to a narrower format
    (`torch.set_float32_matmul_precision("medium")`, oneDNN's bf16/tf32 modes): the engine then
    computes its float products with numpy instead."""
    import torch  # the engine's kernels are torch's; loaded only when a graph runs

    ieee = ("none", "ieee")
    mkldnn = torch.backends.mkldnn
    modes = [getattr(getattr(mkldnn, part, None), "fp32_precision", "none") for part in ("matmul", "conv")]
    return torch.get_float32_matmul_precision() == "highest" and all(mode in ieee for mode in modes)
