"""The user's own Basel-Face-Model basis, read from 3DDFA's files by path (never shipped, never downloaded).

Two on-disk forms are accepted, both giving the same 68 sparse landmarks:

- **3DDFA_V2 pickle** (``configs/bfm_noneck_v3.pkl``): a dict with ``u`` ``(3V, 1)`` (mean shape,
  x, y, z interleaved per vertex), ``w_shp`` ``(3V, >=40)``, ``w_exp`` ``(3V, >=10)`` and
  ``keypoints`` (204 int indices into the flattened ``3V`` rows, 68 points x (x, y, z)). The first
  40 shape and 10 expression columns are kept, as 3DDFA_V2's ``BFMModel`` does.
- **3DDFA's 68-point text basis** (a folder with ``u_base.txt`` (204 values), ``w_shp_base.txt``
  (204 x 40) and ``w_exp_base.txt`` (204 x 10), as in cleardusk/3DDFA ``c++/weights``): already the
  rows ``u[keypoints]``, ``w_shp[keypoints]``, ``w_exp[keypoints]``; whitespace-separated numbers.

Either is returned as a `FaceModel` with ``frame="3ddfa"``: its ``landmarks(params)`` computes
3DDFA's ``R @ reshape(u_base + w_shp_base @ alpha_shp + w_exp_base @ alpha_exp, (3, 68), order="F")
+ offset`` and converts that 1-based, y-up crop frame to the project's 0-based, y-down crop pixels
(``x - 1``, ``size - y``, ``z - 1``: 3DDFA_V2 ``similar_transform`` with the identity roi).

**Pickle safety.** A pickle can run arbitrary code when loaded: only open files you trust. This
module unpickles with a restricted loader that resolves nothing but numpy's array and scalar
reconstructors (and ``collections.OrderedDict``), then rejects anything that is not a dict of
numpy arrays or (nested) lists of numbers. Converting a trusted pickle once to ``.npz`` (numpy
arrays, no code) is the safer habit; `load_bfm` also reads such an ``.npz`` with the same keys.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from qlspec.errors import QlspecError
from qlspec.face.morphable import NUM_EXPRESSION, NUM_LANDMARKS, NUM_PARAMS, NUM_SHAPE, FaceModel
from qlspec.face.params import ParamStats
from qlspec.npz import read_npz

__all__ = ["load_basis_text", "load_bfm", "load_bfm_pkl", "param_stats_from_file", "param_stats_from_pkl", "read_trusted_pickle"]

_ROWS = 3 * NUM_LANDMARKS  # 204
_TEXT_FILES = (
    ("u_base.txt", (_ROWS,)),
    ("w_shp_base.txt", (_ROWS, NUM_SHAPE)),
    ("w_exp_base.txt", (_ROWS, NUM_EXPRESSION)),
)

# (module, name) pairs a numpy pickle needs; numpy 1.x writes numpy.core.*, numpy 2.x numpy._core.*.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # protocol-2 pickles store array bytes as latin-1 text through it
    ("collections", "OrderedDict"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are allowed)")
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = "numpy._core" + module[len("numpy.core") :]  # numpy 2: skip the deprecated alias
        return super().find_class(module, name)


def read_trusted_pickle(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """A pickle holding a dict of numpy arrays or number lists -> ``{key: np.ndarray}``.

    Loaded with a restricted unpickler (numpy reconstructors only; ``latin1`` for Python-2 pickles).
    Only open files you trust. Raises `QlspecError` naming the file if it is missing, is not such a
    pickle, or holds anything other than a dict of arrays/lists.
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise QlspecError("file not found", where=where)
    try:
        with open(path, "rb") as f:
            obj = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except Exception as e:
        # file, a crafted opcode, a frame announcing 2**62 bytes -> MemoryError) means "not such a pickle"
        raise QlspecError(f"not a pickle of numpy arrays ({e.__class__.__name__}: {str(e)[:100]})", where=where) from None
    if not isinstance(obj, dict):
        raise QlspecError(f"expected a dict of arrays, got {type(obj).__name__}", where=where)
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if isinstance(value, np.ndarray) and value.dtype != object:
            out[str(key)] = value
        elif isinstance(value, (list, tuple)):
            try:
                arr = np.asarray(value)
            except ValueError:
                arr = np.asarray([], object)
            if arr.dtype == object or arr.dtype.kind not in "biuf":
                raise QlspecError(f"key {key!r}: a list that is not numeric", where=where)
            out[str(key)] = arr
        else:
            raise QlspecError(f"key {key!r}: expected an array or a list, got {type(value).__name__}", where=where)
    return out


def _need(arrays: dict[str, np.ndarray], key: str, where: str) -> np.ndarray:
    if key not in arrays:
        raise QlspecError(f"missing key {key!r} (has: {', '.join(sorted(arrays)) or 'nothing'})", where=where)
    return arrays[key]


def _basis_from_arrays(arrays: dict[str, np.ndarray], where: str, *, dense: bool) -> FaceModel:
    u = np.asarray(_need(arrays, "u", where), np.float64).reshape(-1)
    w_shp = np.asarray(_need(arrays, "w_shp", where), np.float64)
    w_exp = np.asarray(_need(arrays, "w_exp", where), np.float64)
    kp = np.asarray(_need(arrays, "keypoints", where)).reshape(-1)
    rows = u.shape[0]
    if rows == 0 or rows % 3:
        raise QlspecError(f"key 'u': expected (3V, 1) values, got shape {arrays['u'].shape}", where=where)
    for key, arr, cols in (("w_shp", w_shp, NUM_SHAPE), ("w_exp", w_exp, NUM_EXPRESSION)):
        if arr.ndim != 2 or arr.shape[0] != rows or arr.shape[1] < cols:
            raise QlspecError(f"key {key!r}: expected ({rows}, >={cols}), got shape {arr.shape}", where=where)
    if kp.dtype.kind == "f" and np.all(kp == np.round(kp)):  # 3DDFA_V2 casts with .astype(np.long)
        kp = kp.astype(np.int64)
    if kp.shape != (_ROWS,) or kp.dtype.kind not in "iu":
        raise QlspecError(f"key 'keypoints': expected {_ROWS} integer indices, got {kp.dtype} {kp.shape}", where=where)
    if kp.min() < 0 or kp.max() >= rows:
        raise QlspecError(f"key 'keypoints': indices must lie in [0, {rows}), got {kp.min()}..{kp.max()}", where=where)
    w_shp, w_exp, kp = w_shp[:, :NUM_SHAPE], w_exp[:, :NUM_EXPRESSION], kp.astype(np.int64)
    if dense:
        w_shp, w_exp = np.ascontiguousarray(w_shp), np.ascontiguousarray(w_exp)
        return FaceModel(u=u, w_shp=w_shp, w_exp=w_exp, keypoints=kp, frame="3ddfa")
    rows_68 = np.arange(_ROWS, dtype=np.int64)
    return FaceModel(u=u[kp], w_shp=w_shp[kp], w_exp=w_exp[kp], keypoints=rows_68, frame="3ddfa")


def load_bfm_pkl(path: str | os.PathLike[str], *, dense: bool = False) -> FaceModel:
    """3DDFA_V2 ``bfm_noneck_v3.pkl`` (or an ``.npz`` with the same keys) -> `FaceModel` (frame ``"3ddfa"``).

    Keys ``u`` ``(3V, 1)``, ``w_shp`` ``(3V, >=40)``, ``w_exp`` ``(3V, >=10)``, ``keypoints`` ``(204,)``;
    other keys (``tri`` ...) are ignored. With ``dense=False`` (default) only the 204 landmark rows are
    kept (``u[keypoints]`` ...; a few KB instead of ~24 MB) and ``vertices`` equals ``landmarks``;
    ``dense=True`` keeps all ``V`` vertices. Stored as float64.
    """
    path = Path(path)
    where = str(path)
    if path.suffix == ".npz":
        if not path.is_file():
            raise QlspecError("file not found", where=where)
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    else:
        arrays = read_trusted_pickle(path)
    return _basis_from_arrays(arrays, where, dense=dense)


def load_basis_text(folder: str | os.PathLike[str]) -> FaceModel:
    """A folder with 3DDFA's ``u_base.txt``, ``w_shp_base.txt``, ``w_exp_base.txt`` -> `FaceModel` (frame ``"3ddfa"``).

    The rows are 68 points x (x, y, z) interleaved, i.e. already ``u[keypoints]`` etc.; the values
    are read in file order (``u_base`` any layout of 204 numbers, the bases as 204 rows).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise QlspecError("basis folder not found", where=str(folder))
    arrays = []
    for name, shape in _TEXT_FILES:
        path = folder / name
        if not path.is_file():
            holds = ", ".join(n for n, _ in _TEXT_FILES)
            raise QlspecError(f"missing {name} (a 68-point basis folder holds {holds})", where=str(folder))
        try:
            arr = np.loadtxt(path, dtype=np.float64, ndmin=2)
        except ValueError as e:
            raise QlspecError(f"not a table of numbers: {e}", where=str(path)) from None
        if len(shape) == 1:
            arr = arr.reshape(-1)
        if arr.shape != shape:
            raise QlspecError(f"expected shape {shape}, got {arr.shape}", where=str(path))
        arrays.append(arr)
    u, w_shp, w_exp = arrays
    return FaceModel(u=u, w_shp=w_shp, w_exp=w_exp, keypoints=np.arange(_ROWS, dtype=np.int64), frame="3ddfa")


def load_bfm(path: str | os.PathLike[str], *, dense: bool = False) -> FaceModel:
    """The user's basis at `path`: a folder -> `load_basis_text`, a file -> `load_bfm_pkl`."""
    path = Path(path)
    if path.is_dir():
        return load_basis_text(path)
    return load_bfm_pkl(path, dense=dense)


def param_stats_from_pkl(path: str | os.PathLike[str]) -> ParamStats:
    """3DDFA_V2 ``param_mean_std_62d_120x120.pkl`` (``{'mean', 'std'}``, float32 ``(62,)``) -> `ParamStats`.

    The V1 file (``param_whitening.pkl``, keys ``param_mean``/``param_std``) is accepted too; the two
    files hold different numbers, and a network must be de-normalised with the stats it was trained
    with (3ddfa.md section 2.4).
    """
    arrays = read_trusted_pickle(path)
    if "mean" not in arrays and "param_mean" in arrays:
        arrays = {"mean": arrays["param_mean"], "std": arrays.get("param_std", np.zeros(0))}
    return _param_stats(arrays, str(path))


def param_stats_from_file(path: str | os.PathLike[str]) -> ParamStats:
    """A network's output normalisation from a file: an ``.npz`` with ``mean`` and ``std`` (what the
    data stage writes as param_stats.npz; read without pickles), else a 3DDFA pickle (`param_stats_from_pkl`)."""
    path = Path(path)
    if path.suffix.lower() != ".npz":
        return param_stats_from_pkl(path)
    return _param_stats(read_npz(path, ("mean", "std")), str(path))


def _param_stats(arrays: dict[str, Any], where: str) -> ParamStats:
    """(62,) ``mean`` and ``std`` (every std > 0, every value finite) from a file's arrays."""
    try:
        mean = np.asarray(_need(arrays, "mean", where), np.float32).reshape(-1)
        std = np.asarray(_need(arrays, "std", where), np.float32).reshape(-1)
    except (TypeError, ValueError) as e:
        raise QlspecError(f"'mean' and 'std' must be arrays of numbers ({str(e)[:80]})", where=where) from None
    for key, arr in (("mean", mean), ("std", std)):
        if arr.shape != (NUM_PARAMS,):
            raise QlspecError(f"key {key!r}: expected ({NUM_PARAMS},) values, got {arr.shape[0]}", where=where)
        if not np.isfinite(arr).all():
            raise QlspecError(f"key {key!r}: every value must be finite", where=where)
    if not np.all(std > 0):
        raise QlspecError("key 'std': every value must be > 0", where=where)
    return ParamStats(mean, std)
