"""Gemm, MatMul and the fused *Requant ops against plain int64 numpy."""

from __future__ import annotations

import numpy as np

from qlspec.engine.ops import Gemm, GemmRequant, MatMul, MatMulRequant, RequantShift


def test_gemm_trans_b_with_bias():
    rng = np.random.default_rng(1)
    a = rng.integers(-128, 128, (5, 7)).astype(np.int8)
    w = rng.integers(-128, 128, (3, 7)).astype(np.int8)
    c = rng.integers(-1000, 1000, 3).astype(np.int32)
    want = a.astype(np.int64) @ w.astype(np.int64).T + c
    assert np.array_equal(Gemm(trans_b=True).run(a, w, c), want)
    assert np.array_equal(Gemm(trans_a=True).run(a.T, w.T), a.astype(np.int64) @ w.astype(np.int64).T)


def test_matmul_hand_vector():
    # the ONNX MatMulInteger example without zero points
    a = np.array([[11, 7, 3], [10, 6, 2], [9, 5, 1], [8, 4, 0]], np.uint8)
    b = np.array([[1, 4], [2, 5], [3, 6]], np.int8)
    assert MatMul().run(a, b).tolist() == [[34, 97], [28, 82], [22, 67], [16, 52]]


def test_fused_ops_equal_their_parts():
    rng = np.random.default_rng(2)
    a = rng.integers(-128, 128, (4, 16)).astype(np.int8)
    w = rng.integers(-128, 128, (6, 16)).astype(np.int8)
    mul = rng.integers(1, 300, 6).astype(np.int32)
    add = rng.integers(-5000, 5000, 6).astype(np.int32)
    rq = RequantShift(div=1024, lo=0, hi=255)
    fused = GemmRequant(div=1024, lo=0, hi=255, trans_b=True).run(a, w, None, mul, add)
    assert np.array_equal(fused, rq.run(Gemm(trans_b=True).run(a, w), mul, add))
    fused = MatMulRequant(div=1024, lo=0, hi=255).run(a, w.T, mul, add)
    assert np.array_equal(fused, rq.run(MatMul().run(a, w.T), mul, add))
