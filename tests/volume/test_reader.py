import json
import math

import numpy as np
import pytest
import zarr
from volume_files import blob_volume, write_store

from monai_shf.volume import level_factor, open_volume


@pytest.fixture
def store(tmp_path):
    return write_store(tmp_path / "v.zarr", blob_volume(32), levels=3, chunk=8, spacing=(2.0, 0.5, 0.5))


def test_open_volume_geometry_and_read(store):
    v = open_volume(store)
    assert v.shape == (32, 32, 32)
    assert v.level_shapes == ((32, 32, 32), (16, 16, 16), (8, 8, 8))
    assert v.downsamples == ((1, 1, 1), (2, 2, 2), (4, 4, 4))
    assert v.spacing == (2.0, 0.5, 0.5)
    assert v.num_channels == 1 and v.dtype == np.float32
    x = blob_volume(32)
    region = v.read(0, (3, 4, 5), (7, 8, 9))
    assert region.shape == (1, 7, 8, 9)
    np.testing.assert_array_equal(region[0], x[3:10, 4:12, 5:14])
    with pytest.raises(ValueError, match="outside level 1"):
        v.read(1, (10, 0, 0), (8, 1, 1))
    with pytest.raises(ValueError, match="out of range"):
        v.read(3, (0, 0, 0), (1, 1, 1))


def test_level_factor():
    assert level_factor(33, 17) == 2 and level_factor(33, 16) == 2 and level_factor(32, 12) == 0


def _edit_attrs(store, edit):
    path = store / ".zattrs"
    attrs = json.loads(path.read_text())
    edit(attrs)
    path.write_text(json.dumps(attrs))


def test_no_multiscales(store):
    _edit_attrs(store, lambda a: a.pop("multiscales"))
    with pytest.raises(ValueError, match=r"v\.zarr.*'multiscales'"):
        open_volume(store)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan])
def test_bad_spacing(store, bad):
    def edit(a):
        a["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"][1] = bad

    _edit_attrs(store, edit)
    with pytest.raises(ValueError, match=r"v\.zarr.*coordinateTransformations.*> 0"):
        open_volume(store)


def test_levels_not_powers_of_two(tmp_path):
    store = write_store(tmp_path / "v.zarr", blob_volume(32), levels=2, chunk=8)
    group = zarr.open_group(str(store), mode="r+")
    del group["1"]
    group.create_dataset("1", shape=(12, 12, 12), chunks=(4, 4, 4), dtype="f4")
    with pytest.raises(ValueError, match=r"v\.zarr.*level 1.*powers of two"):
        open_volume(store)


def test_chunks_do_not_tile(tmp_path):
    store = write_store(tmp_path / "v.zarr", blob_volume(32), levels=2, chunk=8)
    group = zarr.open_group(str(store), mode="r+")
    del group["1"]
    group.create_dataset("1", shape=(16, 16, 16), chunks=(3, 3, 3), dtype="f4")
    with pytest.raises(ValueError, match=r"v\.zarr.*chunks of level 1.*do not tile"):
        open_volume(store)


def test_not_a_store(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_volume(tmp_path / "missing.zarr")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(ValueError, match="empty.zarr"):
        open_volume(tmp_path / "empty.zarr")
