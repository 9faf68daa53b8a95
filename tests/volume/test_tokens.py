import numpy as np
import pytest
from volume_files import blob_volume, write_store

from monai_shf.forest import build_forest, serialize, soft_edge_map
from monai_shf.volume import build_volume_forest, leaf_levels, open_volume, serialize_volume


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    x = blob_volume(64)
    store = write_store(tmp_path_factory.mktemp("t") / "v.zarr", x, levels=4, chunk=16)
    forest = build_forest(soft_edge_map(x[None]), 150, patch_size=8)
    return x, open_volume(store), forest


def test_tokens_equal_in_memory(case):
    x, v, forest = case
    levels, _, sizes = leaf_levels(v, forest, 8)
    assert levels.max() >= 1  # coarse levels are really read
    assert (sizes[levels > 0] == 8).all()
    tokens = serialize_volume(v, forest, 8)
    np.testing.assert_allclose(tokens, np.asarray(serialize(x[None], forest, 8)), rtol=1e-6, atol=1e-4)
    # exact at level 0 only
    np.testing.assert_array_equal(
        serialize_volume(v, forest, 8, max_level=0), np.asarray(serialize(x[None], forest, 8))
    )


def test_label_fraction_and_nearest(tmp_path):
    lab = (blob_volume(32) > 40).astype(np.uint8) + (blob_volume(32) > 120).astype(np.uint8)
    store = write_store(tmp_path / "l.zarr", lab, levels=2, chunk=8)
    forest = build_forest(soft_edge_map(lab[None]), 40, patch_size=4)
    frac = serialize_volume(store, forest, 4, mode="fraction", num_classes=3, max_level=0)
    np.testing.assert_allclose(frac, np.asarray(serialize(lab[None], forest, 4, mode="fraction", num_classes=3)))
    near = serialize_volume(store, forest, 4, mode="nearest", max_level=0)
    assert near.dtype == np.uint8
    np.testing.assert_array_equal(near, np.asarray(serialize(lab[None], forest, 4, mode="nearest")))
    with pytest.raises(ValueError, match="num_classes"):
        serialize_volume(store, forest, 4, mode="fraction")


def test_forest_of_another_shape(case, tmp_path):
    _, v, _ = case
    other = build_volume_forest(write_store(tmp_path / "s.zarr", blob_volume(32), levels=2, chunk=8), 8)
    with pytest.raises(ValueError, match=r"v\.zarr.*shaped"):
        serialize_volume(v, other, 8)
