"""`DiskImages` reads what indexing the loaded array gives, for every kind of index training uses,
from files `FaceSet.save` writes; it refuses what it cannot read in place, and survives pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qlspec.data.disk_images import DiskImages
from qlspec.data.faceset import FaceSet


def _faces(n: int, size: int, seed: int) -> FaceSet:
    rng = np.random.default_rng(seed)
    return FaceSet(
        rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        rng.standard_normal((n, 62)).astype(np.float32),
        rng.standard_normal((n, 2, 68)).astype(np.float32),
        rng.standard_normal(n).astype(np.float32),
    )


def _index(n: int):
    ints = st.integers(-n, n - 1)
    return st.one_of(
        ints,
        st.builds(slice, st.none() | st.integers(-n - 2, n + 2), st.none() | st.integers(-n - 2, n + 2), st.none() | st.integers(1, 4)),
        st.builds(slice, st.none() | st.integers(-n - 2, n + 2), st.none() | st.integers(-n - 2, n + 2), st.integers(-4, -1)),
        st.lists(ints, max_size=2 * n).map(lambda v: np.asarray(v, dtype=np.int64)),
        st.lists(st.booleans(), min_size=n, max_size=n).map(np.asarray),
    )


@settings(max_examples=150, deadline=None)
@given(data=st.data(), n=st.integers(1, 12), size=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_indexing_reads_what_the_loaded_array_gives(tmp_path_factory, data, n, size, seed):
    path = tmp_path_factory.mktemp("faces") / "train.npz"
    faces = _faces(n, size, seed)
    faces.save(path)
    disk = DiskImages(path)
    assert (len(disk), disk.shape, disk.dtype, disk.ndim) == (n, faces.images.shape, np.uint8, 4)
    index = data.draw(_index(n), label="index")
    got, want = disk[index], faces.images[index]
    assert isinstance(got, np.ndarray) and got.dtype == want.dtype and np.array_equal(got, want)
    assert np.array_equal(np.asarray(disk), faces.images)


def test_a_faceset_with_images_on_disk_equals_the_loaded_one(tmp_path):
    faces = _faces(20, 8, 0)
    faces.save(tmp_path / "train.npz")
    on_disk = FaceSet.load(tmp_path / "train.npz", images_on_disk=True)
    assert isinstance(on_disk.images, DiskImages) and len(on_disk) == 20 and on_disk.size == 8
    for name in ("params", "landmarks", "yaw_deg"):
        assert np.array_equal(getattr(on_disk, name), getattr(faces, name))
    sub = on_disk.subset(np.array([3, 1, 19]))
    assert np.array_equal(sub.images, faces.images[[3, 1, 19]]) and np.array_equal(sub.params, faces.params[[3, 1, 19]])
    again = pickle.loads(pickle.dumps(on_disk.images))  # DataLoader workers and spawned processes get a copy
    assert np.array_equal(again[5:9], faces.images[5:9])


@pytest.mark.parametrize("index", [20, -21, np.array([0, 20]), np.array([-21]), np.ones(19, bool), np.array([0.5]), np.zeros((2, 2), int)])
def test_an_index_outside_the_images_is_an_index_error(tmp_path, index):
    _faces(20, 4, 1).save(tmp_path / "train.npz")
    with pytest.raises(IndexError):
        DiskImages(tmp_path / "train.npz")[index]


def test_what_cannot_be_read_in_place_is_refused_by_name(tmp_path):
    images = _faces(4, 4, 2).images
    np.savez_compressed(tmp_path / "packed.npz", images=images)
    with pytest.raises(ValueError, match="compressed"):
        DiskImages(tmp_path / "packed.npz")
    np.savez(tmp_path / "fortran.npz", images=np.asfortranarray(images))
    with pytest.raises(ValueError, match="C-ordered"):
        DiskImages(tmp_path / "fortran.npz")
    with pytest.raises(KeyError):
        DiskImages(tmp_path / "fortran.npz", key="params")


def test_a_file_cut_short_after_opening_is_an_os_error(tmp_path):
    path = tmp_path / "train.npz"
    _faces(10, 8, 3).save(path)
    disk = DiskImages(path)
    with open(path, "r+b") as f:
        f.truncate(disk.offset + 3 * disk.shape[1] * disk.shape[2] * 3 + 7)
    assert np.array_equal(disk[:3], disk[:3])  # what is still there reads
    with pytest.raises(OSError, match="ends inside its images"):
        disk[9]
