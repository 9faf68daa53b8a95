import numpy as np
import pytest
from volume_files import blob_volume, exact_pyramid, write_store

from monai_shf.forest import ForestSpec, build_forest, edge_map, soft_edge_map
from monai_shf.volume import build_volume_forest, forest_level_of, open_volume, volume_edge_map


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("f") / "v.zarr", blob_volume(64), levels=4, chunk=16)


def test_level0_forest_equals_in_memory(store):
    x = blob_volume(64)
    f = build_volume_forest(store, 120, max_side=64, patch_size=8)
    ref = build_forest(soft_edge_map(x[None]), 120, patch_size=8)
    np.testing.assert_array_equal(f.starts, ref.starts)
    np.testing.assert_array_equal(f.sizes, ref.sizes)
    assert f.length == 120


def test_banded_edges_equal_whole_level(store):
    edges, level = volume_edge_map(store, max_side=32, band_rows=3)
    assert level == 1
    np.testing.assert_array_equal(edges, soft_edge_map(exact_pyramid(blob_volume(64), 2)[1][None]))


def test_coarse_level_forest_tiles_level0(store):
    v = open_volume(store)
    assert forest_level_of(v, 32) == 1 and forest_level_of(v, 8) == 3 and forest_level_of(v, 4) == 3
    f = build_volume_forest(v, 60, max_side=32, min_size=4)
    assert f.spatial_shape == (64, 64, 64)
    assert int(np.prod(f.sizes, axis=1).sum()) == 64**3  # the Forest constructor checks the tiling
    assert (f.sizes >= 4).all() and (f.starts % 2 == 0).all()


def test_bad_arguments(store):
    with pytest.raises(ValueError, match="min_size"):
        build_volume_forest(store, 8, min_size=65)
    with pytest.raises(ValueError, match="forest_level=7"):
        build_volume_forest(store, 8, forest_level=7)


def test_spec_and_options_agree(store):
    spec = ForestSpec(length=90, patch_size=8, min_size=4, max_side=32)
    a = build_volume_forest(store, spec)
    b = build_volume_forest(store, {"length": 90, "patch_size": 8, "min_size": 4}, max_side=32)
    np.testing.assert_array_equal(a.starts, b.starts)
    np.testing.assert_array_equal(a.sizes, b.sizes)
    with pytest.raises(ValueError, match="unknown forest option 'max_sid'"):
        build_volume_forest(store, spec, max_sid=3)


def test_canny_score_map_is_the_levels_edge_map(store):
    edges, level = volume_edge_map(store, ForestSpec.create(1, max_side=32, edge_kind="canny", edge_method="slicewise"))
    assert level == 1 and edges.dtype == bool
    ref = edge_map(exact_pyramid(blob_volume(64), 2)[1][None], edge_method="slicewise")
    np.testing.assert_array_equal(edges, np.asarray(ref).reshape(edges.shape))
    f = build_volume_forest(store, 40, max_side=32, edge_kind="canny", edge_method="slicewise")
    assert f.spatial_shape == (64, 64, 64) and f.length == 40
