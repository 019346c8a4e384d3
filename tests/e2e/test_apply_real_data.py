"""The data and train stages on real-format 300W-LP / AFLW2000-3D files and a user BFM basis.

The files are tiny ones this test writes itself in the exact formats (scipy.io.savemat, JPEG), with a
random basis of its own: nothing BFM-derived, nothing downloaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "realdata"))
from realdata_fakes import write_300wlp, write_aflw2000, write_bfm_pkl


def qlspec(*args, cwd):
    return subprocess.run([sys.executable, "-m", "qlspec", *map(str, args)], capture_output=True, text=True, cwd=cwd)


SPEC = """\
name: real-tiny
extends: [networks/3ddfa-mb05.yaml]
network: {width: 0.25}
data:
  kind: 300w-lp
  root: data/300W_LP
  val_root: data/AFLW2000
  bfm: data/bfm_noneck_v3.pkl
  landmarks: model
training: {epochs: 1, batch_size: 16, threads: 1}
quantisation: {algorithm: none}
verify: {samples: 8}
"""


def test_real_data_trains_with_the_users_basis(tmp_path):
    write_300wlp(tmp_path / "data" / "300W_LP", n=40, seed=0)
    write_aflw2000(tmp_path / "data" / "AFLW2000", n=8, seed=1)
    write_bfm_pkl(tmp_path / "data" / "bfm_noneck_v3.pkl")
    (tmp_path / "app.yaml").write_text(SPEC)
    r = qlspec("apply", "app.yaml", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "read 40 300W-LP + 8 AFLW2000-3D faces" in r.stdout
    assert "quantise  skipped  (quantisation.algorithm is none)" in r.stdout
    data = tmp_path / "build" / "real-tiny" / "data"
    with np.load(data / "face_model.npz") as f:
        assert f["w_shp"].shape == (204, 40)
    rows = {row["rung"]: row for row in json.loads((tmp_path / "build" / "real-tiny" / "report.json").read_text())["rows"]}
    assert rows["FP"]["n"] == 8 and np.isfinite(rows["FP"]["nme"])
    # the data set is part of the key: touching an annotation file makes data stale
    mat = sorted((tmp_path / "data" / "300W_LP").rglob("*.mat"))[0]
    mat.write_bytes(mat.read_bytes() + b"\0")
    plan = qlspec("plan", "app.yaml", cwd=tmp_path)
    assert "data      will run  (file named by data.root changed)" in plan.stdout


def test_a_missing_data_folder_is_a_located_error(tmp_path):
    (tmp_path / "app.yaml").write_text(SPEC)
    r = qlspec("validate", "app.yaml", cwd=tmp_path)
    assert r.returncode == 2
    assert "app.yaml:6:9: data.root: not found: data/300W_LP" in r.stderr
