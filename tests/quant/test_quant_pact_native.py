"""The fused PACT kernel (`qlspec.quant.pact_native`) against the torch path, and how it is built.

The kernel must be what the torch path is: the same forward output bit for bit, the same input
gradient, the bounds' gradients within float summation error, on generated activations of every
size (serial and threaded loops), layout (NCHW, channels-last; anything else falls back) and
gradient layout, with the bounds, their neighbours, halves and infinities planted in them. The build
(`qlspec.native`) must fail safe: no compiler, a failing one, an unwritable cache, a corrupt cached
library and a wrong build each end on the torch path with a reason, never on a wrong answer.
"""

from __future__ import annotations

import ctypes
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qlspec import native
from qlspec.quant import pact_native
from qlspec.quant.pact import RULES, PACTQuantFunc

SOURCE = pact_native.SOURCE


def test_the_kernel_is_built_and_checked_where_a_compiler_is():
    if not native.enabled():
        pytest.skip("QLSPEC_NATIVE is off")
    assert shutil.which(os.environ.get("CC") or "cc"), "no C compiler: scripts/install.sh installs g++ (and gcc)"
    assert pact_native.available(), native.unavailable


def _run(x, eps, lo, hi, q_lo, q_hi, rule, grad_of):
    """(y, dL/dx, dL/dlo, dL/dhi) through PACTQuantFunc, for the loss `grad_of(y)`."""
    xr, lor, hir = (t.detach().requires_grad_(True) for t in (x, lo, hi))  # x's own strides, not a clone's
    y = PACTQuantFunc.apply(xr, eps, lor, hir, q_lo, q_hi, rule)
    grad_of(y).backward()
    return y.detach(), xr.grad, lor.grad, hir.grad


LAYOUTS = ("nchw", "channels_last", "strided")
GRADS = ("same", "nchw", "expanded")


@settings(max_examples=120, deadline=None)
@given(
    data=st.data(),
    shape=st.one_of(
        st.tuples(st.integers(1, 4), st.integers(1, 40), st.integers(1, 40), st.integers(1, 40)),
        st.tuples(st.integers(4, 6), st.integers(24, 40), st.integers(30, 40), st.integers(30, 40)),  # threaded
    ),
    bits=st.sampled_from([2, 4, 8]),
    signed=st.booleans(),
    rule=st.sampled_from(RULES),
    layout=st.sampled_from(LAYOUTS),
    grad=st.sampled_from(GRADS),
    threads=st.sampled_from([1, 2]),
)
def test_kernel_equals_the_torch_path(data, shape, bits, signed, rule, layout, grad, threads):
    if not pact_native.available():
        pytest.skip(f"kernel not available: {native.unavailable}")
    n = 2**bits
    q_lo, q_hi = (-(n // 2), n // 2 - 1) if signed else (0, n - 1)
    m = data.draw(st.floats(1e-3, 1e3), label="bound")
    lo = torch.tensor([-m if signed else 0.0])
    hi = lo * (-(n - 2) / n) if signed else torch.tensor([m])
    eps = (hi - lo) / (n - 1)
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31), label="seed"))
    x = torch.randn(shape, generator=gen) * (2 * m)
    flat = x.view(-1)
    up, down = torch.tensor(math.inf), torch.tensor(-math.inf)
    planted = torch.cat([t for b in (lo, hi) for t in (b, torch.nextafter(b, up), torch.nextafter(b, down))])
    planted = torch.cat([planted, up.reshape(1), down.reshape(1), (torch.arange(-3, 3) + 0.5) * eps])
    at = torch.randint(0, flat.numel(), (planted.numel(),), generator=gen)
    flat[at] = planted
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.cat([x, x], dim=3)[..., ::2]  # not dense: the torch path
    g = torch.randn(shape, generator=gen)
    grad_of = {
        "same": lambda y: (y * g.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else y * g).sum(),
        "nchw": lambda y: (y * g).sum(),
        "expanded": lambda y: y.sum(),
    }[grad]

    dense = x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)  # "strided" is, when w == 1
    assert (pact_native.forward(x, eps.item(), lo.item(), hi.item(), q_lo, q_hi, rule) is None) == (not dense)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = _run(x, eps, lo, hi, q_lo, q_hi, rule, grad_of)
        with pact_native.disabled():
            want = _run(x, eps, lo, hi, q_lo, q_hi, rule, grad_of)
    finally:
        torch.set_num_threads(before)
    assert got[0].stride() == x.stride() or layout == "strided"
    assert torch.equal(got[0], want[0])
    assert torch.equal(got[1], want[1])
    # the bounds' sums: the kernel adds in double, torch in float32: within float32's summation error
    bound = x.numel() * torch.finfo(torch.float32).eps * (g.abs().sum() if grad != "expanded" else x.numel())
    for a, b in zip(got[2:], want[2:]):
        assert a.shape == b.shape == (1,)
        assert (a - b).abs().item() <= bound


def test_the_torch_path_runs_where_the_kernel_cannot():
    """float64, bounds per channel, and torch.compile's tracing all take the torch path (no error)."""
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    assert pact_native.forward(x, 0.1, 0.0, 25.5, 0, 255, "floor") is None
    assert pact_native.forward(x.float()[:, :, ::2], 0.1, 0.0, 25.5, 0, 255, "floor") is None
    y = pact_native.forward(x.float(), 0.1, 0.0, 25.5, 0, 255, "floor")
    assert y is None or torch.equal(y, (x.float() / torch.tensor(0.1)).floor().clamp(0, 255) * torch.tensor(0.1))


# -- building ------------------------------------------------------------------------------------


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """A private cache folder and an empty per-process memo of built libraries."""
    monkeypatch.setenv("QLSPEC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("QLSPEC_NATIVE", raising=False)
    native._load.cache_clear()
    yield tmp_path
    native._load.cache_clear()
    native.unavailable.pop(SOURCE.name, None)


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def test_off_switch(fresh, monkeypatch):
    monkeypatch.setenv("QLSPEC_NATIVE", "0")
    assert native.load(SOURCE) is None
    assert native.unavailable[SOURCE.name] == "QLSPEC_NATIVE is off"


def test_no_compiler(fresh, monkeypatch):
    monkeypatch.setenv("CC", "qlspec-no-such-cc")
    assert native.load(SOURCE) is None
    assert "no C compiler" in native.unavailable[SOURCE.name]


def test_a_failing_compiler_is_reported_and_leaves_nothing(fresh, monkeypatch):
    monkeypatch.setenv("CC", _script(fresh / "cc", 'echo "cc: fatal error: out of licences" >&2; exit 1'))
    assert native.load(SOURCE) is None
    assert native.unavailable[SOURCE.name] == "cc failed on pact_kernel.c: cc: fatal error: out of licences"
    assert not any((fresh / "cache").glob("*.so"))


def test_an_unwritable_cache_falls_back_to_a_spare_folder(fresh, monkeypatch):
    if shutil.which(os.environ.get("CC") or "cc") is None:
        pytest.skip("no C compiler")
    (fresh / "file").write_text("not a folder")
    monkeypatch.setenv("QLSPEC_CACHE_DIR", str(fresh / "file" / "cache"))  # cannot be made
    monkeypatch.setattr(tempfile, "tempdir", str(fresh / "tmp"))
    (fresh / "tmp").mkdir()
    lib = native.load(SOURCE)
    assert lib is not None and SOURCE.name not in native.unavailable
    assert [p.name.startswith("pact_kernel-") for p in (fresh / "tmp").glob("qlspec-cache-*/*.so")] == [True]


def test_no_folder_at_all_is_reported(fresh, monkeypatch):
    (fresh / "file").write_text("not a folder")
    monkeypatch.setenv("QLSPEC_CACHE_DIR", str(fresh / "file" / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(fresh / "file"))  # the spare folder cannot be made either
    assert native.load(SOURCE) is None
    assert "Not a directory" in native.unavailable[SOURCE.name]


def test_a_corrupt_cached_library_is_rebuilt(fresh):
    if shutil.which(os.environ.get("CC") or "cc") is None:
        pytest.skip("no C compiler")
    # built by another process (this one would reuse its own open copy of the file)
    subprocess.run([sys.executable, "-c", "from qlspec import native, quant; assert native.load(quant.pact_native.SOURCE)"], check=True)
    (built,) = (fresh / "cache").glob("pact_kernel-*.so")
    built.write_bytes(b"\0" * 100)  # e.g. cut short by a full disk
    lib = native.load(SOURCE)
    assert lib is not None and built.read_bytes()[:4] == b"\x7fELF"
    assert pact_native.agrees_with_torch(pact_native.declare(lib))


@pytest.mark.parametrize(
    "old, new",
    [
        ("ROUND(xi / eps)", "ROUND(xi * (1.0f / eps))"),  # a reciprocal (what -ffast-math may do)
        ("nearbyintf", "roundf"),  # half away from zero, not to even
        ("v = xi >= hi ? qhi : v;", ""),  # no pinning at the upper bound
        ("int below = xi < lo", "int below = xi <= lo"),
        ("a_hi += (double)g_hi;", "a_hi += (double)g_hi * 0.5;"),
    ],
)
def test_a_wrong_build_fails_the_check(fresh, old, new):
    """The per-process check catches a kernel that differs from torch in any one operation."""
    if shutil.which(os.environ.get("CC") or "cc") is None:
        pytest.skip("no C compiler")
    text = SOURCE.read_text()
    assert old in text
    wrong = fresh / SOURCE.name
    wrong.write_text(text.replace(old, new))
    lib = native.load(wrong)
    assert isinstance(lib, ctypes.CDLL)
    assert not pact_native.agrees_with_torch(pact_native.declare(lib))
