"""build_slide_forest: level choice, level-0 coordinates, exact tiling, banded reduction, bad input."""

from __future__ import annotations

import cv2 as cv
import numpy as np
import pytest
from slide_files import area_pyramid, texture, write_tiff_pyramid

from monai_shf.forest import build_forest, edge_map, soft_edge_map
from monai_shf.slide import build_slide_forest, forest_grid, open_slide, slide_edge_map


def _assert_tiles(forest, shape):
    covered = np.zeros(shape, dtype=np.int32)
    for (y, x), (h, w) in zip(forest.starts, forest.sizes):
        covered[y : y + h, x : x + w] += 1
    assert (covered == 1).all()


def test_forest_of_a_level_in_level0_pixels(exact_slide):
    path, levels = exact_slide
    with open_slide(path) as slide:
        assert forest_grid(slide, max_side=256) == (2, 1)  # 128 x 256 is the finest level <= 256
        forest = build_slide_forest(slide, 100, max_side=256, min_size=8)
    reference = build_forest(soft_edge_map(levels[2].transpose(2, 0, 1)), 100, min_size=2)
    assert forest.spatial_shape == (512, 1024) and forest.length == 100
    np.testing.assert_array_equal(forest.starts, reference.starts * 4)  # same leaves, same Z-order
    np.testing.assert_array_equal(forest.sizes, reference.sizes * 4)
    _assert_tiles(forest, (512, 1024))


def test_forest_level_and_forwarded_options(exact_slide):
    path, levels = exact_slide
    forest = build_slide_forest(path, 64, forest_level=3, fill="pad", thresholds=(20, 40))
    reference = build_forest(soft_edge_map(levels[3].transpose(2, 0, 1), thresholds=(20, 40)), 64, fill="pad")
    np.testing.assert_array_equal(forest.starts, reference.starts * 8)
    assert forest.num_leaves == reference.num_leaves
    # the paper's binary Canny edges on request
    canny = build_slide_forest(path, 64, forest_level=3, fill="pad", thresholds=(20, 40), edge_kind="canny")
    reference = build_forest(edge_map(levels[3].transpose(2, 0, 1), thresholds=(20, 40)), 64, fill="pad")
    np.testing.assert_array_equal(canny.starts, reference.starts * 8)
    assert canny != forest
    with pytest.raises(ValueError, match="edge_kind"):
        build_slide_forest(path, 64, edge_kind="sobel")
    with pytest.raises(ValueError, match="unknown forest option 'no_such_option'"):
        build_slide_forest(path, 64, no_such_option=1)


def test_patch_size_cap_is_in_level0_pixels(exact_slide):
    """criterion="error" stops splitting at the token's resolution, given in level-0 pixels: on a grid 4x
    coarser, a token of 16 level-0 pixels is 4 grid pixels."""
    path, levels = exact_slide
    forest = build_slide_forest(path, 3000, max_side=256, criterion="error", patch_size=16)
    grid = soft_edge_map(levels[2].transpose(2, 0, 1))
    reference = build_forest(grid, 3000, criterion="error", patch_size=4)
    np.testing.assert_array_equal(forest.starts, reference.starts * 4)
    np.testing.assert_array_equal(forest.sizes, reference.sizes * 4)
    assert forest != build_slide_forest(path, 3000, max_side=256, criterion="error", patch_size=4)


def test_non_power_of_two_downsample_tiles_exactly(tmp_path):
    image = texture(500, 750)
    levels = [image, cv.resize(image, (186, 124), interpolation=cv.INTER_AREA)]  # 4.03 x 4.02
    path = write_tiff_pyramid(tmp_path / "a.svs", levels, tile=64, layout="svs")
    forest = build_slide_forest(path, 200, max_side=256)
    assert forest.spatial_shape == (500, 750) and forest.length == 200 and forest.num_leaves >= 200 - 2
    _assert_tiles(forest, (500, 750))
    ends = forest.starts + forest.sizes
    assert ends[:, 0].max() == 500 and ends[:, 1].max() == 750


def test_min_size_is_in_level0_pixels(exact_slide):
    path, _ = exact_slide
    forest = build_slide_forest(path, 4000, max_side=300, min_size=12)  # grid scale 2: >= 6 grid pixels
    assert forest.sizes.min() >= 12
    with pytest.raises(ValueError, match="min_size .* larger than every side of .*exact.tif"):
        build_slide_forest(path, 10, min_size=2000)


def test_banded_reduction_when_no_level_is_small_enough(tmp_path):
    """A single-level slide larger than max_side: the grid is the level reduced 3x (INTER_AREA)."""
    image = texture(600, 450)
    path = tmp_path / "single.tif"
    write_tiff_pyramid(path, [image], tile=64)
    with open_slide(path) as slide:
        assert forest_grid(slide, max_side=200) == (0, 3)
        edges, scale = slide_edge_map(slide, max_side=200, band_rows=32)
        forest = build_slide_forest(slide, 80, max_side=200, band_rows=32)
    small = cv.resize(image, (150, 200), interpolation=cv.INTER_AREA)
    np.testing.assert_array_equal(edges, soft_edge_map(small.transpose(2, 0, 1)))
    assert edges.dtype == np.uint8 and scale == (3.0, 3.0)
    with open_slide(path) as slide:
        canny, _ = slide_edge_map(slide, max_side=200, band_rows=32, edge_kind="canny")
    np.testing.assert_array_equal(canny, edge_map(small.transpose(2, 0, 1)))
    reference = build_forest(edges, 80)
    np.testing.assert_array_equal(forest.starts, reference.starts * 3)
    _assert_tiles(forest, (600, 450))


def test_uint16_single_channel_slide(tmp_path):
    grey = texture(256, 256, channels=1).astype(np.uint16) * 200 + 1000
    path = write_tiff_pyramid(tmp_path / "grey.tif", area_pyramid(grey, 3), tile=64)
    forest = build_slide_forest(path, 40, max_side=128)
    reference = build_forest(soft_edge_map(area_pyramid(grey, 3)[1][None]), 40)
    np.testing.assert_array_equal(forest.starts, reference.starts * 2)


def test_bad_input(exact_slide):
    path, _ = exact_slide
    with pytest.raises(ValueError, match="forest_level=7 is out of range for .*exact.tif.*6 level"):
        build_slide_forest(path, 10, forest_level=7)
    with pytest.raises(ValueError, match="length must be >= 1"):
        build_slide_forest(path, 0)
    with pytest.raises(ValueError, match="max_side must be >= 1"):
        build_slide_forest(path, 10, max_side=0)
    with pytest.raises(ValueError, match="slide file not found"):
        build_slide_forest(str(path) + ".missing", 10)
