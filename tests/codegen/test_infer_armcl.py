"""`qlspec infer --backend armcl|cpu`: any convertible file, generated, cross-built and run under qemu
(or built and run here without ACL)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from shared_exports import shared_exports

pytestmark = pytest.mark.slow

CASE = shared_exports() / "deeploy" / "Models_CNN_Linear1"


def qlspec(*args, cwd):
    return subprocess.run([sys.executable, "-m", "qlspec", *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.mark.skipif(not (CASE / "network.onnx").exists(), reason="shared QuantLab exports not found")
def test_infer_armcl_equals_the_reference_engine(tmp_path):
    for backend in ("reference", "armcl", "cpu"):
        r = qlspec(
            "infer",
            CASE / "network.onnx",
            "--inputs",
            CASE / "inputs.npz",
            "-o",
            f"{backend}.npz",
            "--backend",
            backend,
            "--project",
            tmp_path / f"project-{backend}",
            cwd=tmp_path,
        )
        assert r.returncode == 0, r.stdout + r.stderr
    ref = np.load(tmp_path / "reference.npz")
    for backend in ("armcl", "cpu"):
        got = np.load(tmp_path / f"{backend}.npz")
        assert ref.files == got.files and all(np.array_equal(ref[k], got[k]) and ref[k].dtype == got[k].dtype for k in ref.files)
    acl = np.load(tmp_path / "armcl.npz")
    expected = np.load(CASE / "outputs.npz")
    assert np.array_equal(acl[acl.files[0]].reshape(-1), expected[expected.files[0]].reshape(-1))
    assert (tmp_path / "project-armcl" / "network.cpp").exists() and (tmp_path / "project-armcl" / "CMakeLists.txt").exists()
    assert not (tmp_path / "project-cpu" / "runtime" / "qlspec_acl.h").exists()  # the portable build has no ACL at all


@pytest.mark.skipif(not (CASE / "network.onnx").exists(), reason="shared QuantLab exports not found")
def test_infer_armcl_refuses_inputs_outside_their_type_before_building(tmp_path):
    np.savez(tmp_path / "bad.npz", np.full((1, 1, 32, 32), 2**40, np.int64))
    r = qlspec("infer", CASE / "network.onnx", "--inputs", "bad.npz", "-o", "out.npz", "--backend", "armcl", "--project", "p", cwd=tmp_path)
    assert r.returncode == 2 and "outside the declared" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "p").exists() and not (tmp_path / "out.npz").exists()
