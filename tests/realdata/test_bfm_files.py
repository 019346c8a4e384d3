"""The user's BFM basis (pickle and 68-point text forms) and 3DDFA's parameter statistics."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from realdata_fakes import fake_basis, write_bfm_pkl, write_text_basis

from qlspec.errors import QlspecError
from qlspec.face.bfm import load_basis_text, load_bfm, load_bfm_pkl, param_stats_from_pkl


def _reference_landmarks(params: np.ndarray, seed: int = 0, size: int = 120) -> np.ndarray:
    """3DDFA's formula written point by point, then V2's identity-roi frame change (x - 1, size - y)."""
    u, w_shp, w_exp = fake_basis(seed)
    out = np.zeros((len(params), 3, 68))
    for n, p in enumerate(params):
        P = p[:12].reshape(3, 4)
        flat = u + w_shp @ p[12:52] + w_exp @ p[52:62]
        for k in range(68):
            x, y, z = P[:, :3] @ flat[3 * k : 3 * k + 3] + P[:, 3]
            out[n, :, k] = (x - 1, size - y, z - 1)
    return out


def _params(n: int = 4) -> np.ndarray:
    rng = np.random.default_rng(7)
    p = np.zeros((n, 62))
    p[:, :12] = rng.normal(0, 0.5, (n, 12))
    p[:, 12:52] = rng.normal(0, 2e5, (n, 40))
    p[:, 52:62] = rng.normal(0, 1, (n, 10))
    return p


@pytest.mark.parametrize("protocol", [2, 4])
def test_pkl_basis_landmarks_match_the_formula(tmp_path, protocol):
    model = load_bfm_pkl(write_bfm_pkl(tmp_path / "bfm_noneck_v3.pkl", protocol=protocol))
    p = _params()
    np.testing.assert_allclose(model.landmarks(p), _reference_landmarks(p), rtol=0, atol=1e-3)
    assert model.frame == "3ddfa" and model.u.shape == (204,)


def test_dense_pkl_keeps_all_vertices_and_same_landmarks(tmp_path):
    path = write_bfm_pkl(tmp_path / "bfm.pkl", vertices=150)
    dense, sparse = load_bfm_pkl(path, dense=True), load_bfm(path)
    assert dense.num_vertices == 150 and dense.w_shp.shape == (450, 40) and dense.w_exp.shape == (450, 10)
    p = _params(2)
    np.testing.assert_allclose(dense.landmarks(p), sparse.landmarks(p), atol=1e-9)


def test_text_basis_landmarks_match_the_formula(tmp_path):
    model = load_bfm(write_text_basis(tmp_path / "weights"))
    p = _params()
    np.testing.assert_allclose(model.landmarks(p), _reference_landmarks(p), rtol=0, atol=1e-6)


def test_pkl_and_text_basis_agree(tmp_path):
    a = load_bfm(write_text_basis(tmp_path / "w"))
    b = load_bfm(write_bfm_pkl(tmp_path / "b.pkl"))
    p = _params(2)
    np.testing.assert_allclose(a.landmarks(p), b.landmarks(p), atol=1e-3)  # float32 pkl vs text


def test_npz_with_the_same_keys_loads(tmp_path):
    path = write_bfm_pkl(tmp_path / "b.pkl")
    with open(path, "rb") as f:
        np.savez(tmp_path / "b.npz", **{k: v for k, v in pickle.load(f).items()})
    p = _params(2)
    np.testing.assert_allclose(load_bfm(tmp_path / "b.npz").landmarks(p), load_bfm(path).landmarks(p))


def test_missing_key_names_key_and_file(tmp_path):
    path = write_bfm_pkl(tmp_path / "bfm.pkl", drop="w_exp")
    with pytest.raises(QlspecError) as e:
        load_bfm(path)
    assert "'w_exp'" in e.value.message and e.value.where == str(path)


def test_wrong_shapes_are_named(tmp_path):
    path = tmp_path / "bfm.pkl"
    u, w_shp, w_exp = fake_basis()
    good = {"u": u[:, None], "w_shp": w_shp, "w_exp": w_exp, "keypoints": np.arange(204)}
    for key, bad, words in (
        ("w_shp", w_shp[:, :30], "(204, >=40)"),
        ("keypoints", np.arange(200), "204 integer"),
        ("keypoints", np.arange(204) + 5, "indices must lie"),
    ):
        path.write_bytes(pickle.dumps(good | {key: bad}))
        with pytest.raises(QlspecError, match=f"'{key}'") as e:
            load_bfm(path)
        assert words in e.value.message and e.value.where == str(path)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo should-not-run",))


def test_pickle_with_code_is_refused_without_running(tmp_path, capfd):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"u": _Evil()}))
    with pytest.raises(QlspecError, match="refusing to load") as e:
        load_bfm(path)
    assert e.value.where == str(path)
    assert "should-not-run" not in capfd.readouterr().out


def test_non_dict_and_non_array_values_are_rejected(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(QlspecError, match="dict of arrays"):
        load_bfm(path)
    path.write_bytes(pickle.dumps({"u": "text"}))
    with pytest.raises(QlspecError, match="'u'"):
        load_bfm(path)


def test_text_basis_errors_name_the_file(tmp_path):
    folder = write_text_basis(tmp_path / "w")
    np.savetxt(folder / "w_exp_base.txt", np.zeros((204, 9)))
    with pytest.raises(QlspecError, match=r"expected shape \(204, 10\)") as e:
        load_basis_text(folder)
    assert e.value.where == str(folder / "w_exp_base.txt")
    (folder / "u_base.txt").unlink()
    with pytest.raises(QlspecError, match="missing u_base.txt"):
        load_basis_text(folder)
    with pytest.raises(QlspecError, match="not found"):
        load_bfm(tmp_path / "nowhere.pkl")


def test_param_stats_from_pkl(tmp_path):
    rng = np.random.default_rng(0)
    mean, std = rng.normal(0, 1, 62).astype(np.float32), rng.uniform(0.1, 2, 62).astype(np.float32)
    path = tmp_path / "param_mean_std_62d_120x120.pkl"
    path.write_bytes(pickle.dumps({"mean": mean, "std": std}))
    stats = param_stats_from_pkl(path)
    assert stats.mean.dtype == np.float32 and np.array_equal(stats.mean, mean) and np.array_equal(stats.std, std)
    path.write_bytes(pickle.dumps({"mean": mean}))
    with pytest.raises(QlspecError, match="missing key 'std'") as e:
        param_stats_from_pkl(path)
    assert e.value.where == str(path)
    path.write_bytes(pickle.dumps({"mean": mean[:50], "std": std}))
    with pytest.raises(QlspecError, match=r"'mean': expected \(62,\)"):
        param_stats_from_pkl(path)
