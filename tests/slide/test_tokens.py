"""serialize_slide: equality with in-memory serialize, level choice per leaf, tile decodes, labels, bad input."""

from __future__ import annotations

import cv2 as cv
import numpy as np
import pytest
import tifffile
import torch
from slide_files import texture, write_tiff_pyramid

from monai_shf.forest import Forest, build_forest, edge_map, serialize
from monai_shf.slide import leaf_levels, open_slide, serialize_slide


def _touched_tiles(slide, forest, patch):
    levels, starts, sizes = leaf_levels(slide, forest, patch)
    touched = set()
    for k, (y, x), (h, w) in zip(levels, starts, sizes):
        th, tw = slide.tile_shape(int(k))
        for r in range(y // th, (y + h - 1) // th + 1):
            for c in range(x // tw, (x + w - 1) // tw + 1):
                touched.add((int(k), r, c))
    return touched


@pytest.mark.parametrize("length", [40, 300])
def test_tokens_equal_in_memory_serialize_on_exact_pyramid(exact_slide, length):
    path, levels = exact_slide
    image = levels[0].transpose(2, 0, 1)
    forest = build_forest(edge_map(image), length, min_size=4)
    expected = serialize(image, forest, 8)
    with open_slide(path) as slide:
        tokens = serialize_slide(slide, forest, 8)
        assert tokens.dtype == np.float32 and tokens.shape == (3, length, 8, 8)
        np.testing.assert_array_equal(tokens, expected)
        # every leaf from the level where it is 8 pixels across; each tile decoded once
        chosen, _, sizes = leaf_levels(slide, forest, 8)
        np.testing.assert_array_equal(chosen, np.log2(forest.sizes[:, 0] // 8).astype(int))
        assert (sizes == 8).all()
        assert slide.tile_decodes == len(_touched_tiles(slide, forest, 8))


def test_level0_never_decoded_for_large_leaves(exact_slide):
    path, _ = exact_slide
    forest = Forest(*_grid_boxes((512, 1024), 64), (512, 1024), 128)  # 64 x 64 leaves
    with open_slide(path) as slide:
        tokens = serialize_slide(slide, forest, 8)
        assert slide.level_decodes[:3] == (0, 0, 0)  # 64 px leaves read at level 3 (8 px across)
        assert slide.level_decodes[3] == len(_touched_tiles(slide, forest, 8)) == 2
    with open_slide(path) as slide:  # max_level bounds the choice
        np.testing.assert_allclose(serialize_slide(slide, forest, 8, max_level=1), tokens, atol=1.0)
        assert slide.level_decodes[0] == 0 and slide.level_decodes[1] > 0


def _grid_boxes(shape, side):
    ys, xs = np.meshgrid(np.arange(0, shape[0], side), np.arange(0, shape[1], side), indexing="ij")
    starts = np.stack([ys.ravel(), xs.ravel()], axis=1)
    return starts, np.full_like(starts, side)


def test_non_power_of_two_downsamples_close_to_in_memory(tmp_path):
    image = texture(500, 750)
    levels = [image, cv.resize(image, (186, 124), interpolation=cv.INTER_AREA)]  # 4.03 x 4.02
    path = write_tiff_pyramid(tmp_path / "a.svs", levels, tile=64, layout="svs")
    forest = build_forest(edge_map(image.transpose(2, 0, 1)), 150)
    expected = serialize(image.transpose(2, 0, 1), forest, 8)
    with open_slide(path) as slide:
        tokens = serialize_slide(slide, forest, 8)
        chosen, _, _ = leaf_levels(slide, forest, 8)
    assert set(np.unique(chosen)) == {0, 1} and tokens.shape == expected.shape
    # the reduced level is an area mean too, sampled on a grid shifted by under a level pixel
    n, big = forest.num_leaves, chosen == 1
    assert np.abs(tokens[:, :n][:, big] - expected[:, :n][:, big]).mean() < 6.0
    np.testing.assert_array_equal(tokens[:, :n][:, ~big], expected[:, :n][:, ~big])


def test_label_slide_nearest_and_fraction(tmp_path):
    label = (texture(256, 256, channels=1) // 90).astype(np.uint8)  # classes 0..2
    levels = [label, label[::2, ::2].copy(), label[::4, ::4].copy()]  # nearest-reduced label levels
    path = write_tiff_pyramid(tmp_path / "label.tif", levels, tile=64)
    forest = build_forest(edge_map(label[None]), 50)
    with open_slide(path) as slide:
        fractions = serialize_slide(slide, forest, 8, mode="fraction", num_classes=3, max_level=0)
        np.testing.assert_allclose(fractions, serialize(label[None], forest, 8, mode="fraction", num_classes=3))
        nearest = serialize_slide(slide, forest, 8, mode="nearest")
        assert nearest.dtype == np.uint8 and set(np.unique(nearest)) <= {0, 1, 2}
        with pytest.raises(ValueError, match="needs num_classes"):
            serialize_slide(slide, forest, 8, mode="fraction")


def test_single_level_slide_and_paths(tmp_path):
    image = texture(200, 300)
    path = tmp_path / "one.tif"
    tifffile.imwrite(path, image, tile=(64, 64), photometric="rgb")
    forest = build_forest(edge_map(image.transpose(2, 0, 1)), 30)
    np.testing.assert_allclose(serialize_slide(path, forest, 4), serialize(image.transpose(2, 0, 1), forest, 4))


class _Tokens(torch.utils.data.Dataset):
    def __init__(self, path, forest):
        self.path, self.forest = path, forest

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> np.ndarray:
        return serialize_slide(self.path, self.forest, 4 * (1 + i % 2))[:, :, :4, :4]


def test_dataloader_workers_with_paths(exact_slide):
    path, _ = exact_slide
    forest = build_forest(np.ones((512, 1024), bool), 24)
    loader = torch.utils.data.DataLoader(_Tokens(str(path), forest), batch_size=2, num_workers=2)
    batches = torch.cat(list(loader))
    for i in range(4):
        np.testing.assert_array_equal(batches[i].numpy(), _Tokens(str(path), forest)[i])


def test_bad_input(exact_slide, tmp_path):
    path, _ = exact_slide
    with open_slide(path) as slide:
        with pytest.raises(ValueError, match="forest tiles \\(100, 100\\) but .*exact.tif is shaped"):
            serialize_slide(slide, build_forest(np.ones((100, 100), bool), 4), 8)
        with pytest.raises(TypeError, match="forest must be"):
            serialize_slide(slide, "leaves", 8)
        with pytest.raises(ValueError, match="mode must be one of"):
            serialize_slide(slide, build_forest(np.ones((512, 1024), bool), 4), 8, mode="cubic")
        with pytest.raises(ValueError, match="max_level=9 is out of range"):
            serialize_slide(slide, build_forest(np.ones((512, 1024), bool), 4), 8, max_level=9)
    tiny = tmp_path / "tiny.tif"
    tifffile.imwrite(tiny, np.zeros((6, 40, 3), np.uint8), tile=(16, 16), photometric="rgb")
    with pytest.raises(ValueError, match="tiny.tif .* smaller than the token side patch_size=8"):
        serialize_slide(tiny, build_forest(np.ones((6, 40), bool), 4), 8)


def test_label_value_of_num_classes_names_the_slide(tmp_path):
    label = (texture(128, 128, channels=1) // 90).astype(np.uint8)  # classes 0..2
    label[60:70, 60:70] = 7
    path = write_tiff_pyramid(tmp_path / "bad_label.tif", [label], tile=64)
    forest = build_forest(edge_map(label[None]), 30)
    with pytest.raises(
        ValueError, match="bad_label.tif \\(level 0\\): label values must lie in \\[0, num_classes=3\\), got 0..7"
    ):
        serialize_slide(path, forest, 8, mode="fraction", num_classes=3)
