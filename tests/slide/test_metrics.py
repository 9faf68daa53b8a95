"""slide_dice: equal to in-memory Dice (MONAI's compute_dice), block-wise over tiles, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from slide_files import texture

from monai_shf.slide import open_slide, slide_confusion, slide_dice


@pytest.fixture()
def label_and_mask(tmp_path):
    label = (texture(300, 520, channels=1, seed=3) // 70).astype(np.uint8)  # classes 0..3
    rng = np.random.default_rng(0)
    mask = label.copy()
    flip = rng.random(label.shape) < 0.1
    mask[flip] = rng.integers(0, 4, int(flip.sum()))
    mask[:, :40][mask[:, :40] == 3] = 2
    label_path, mask_path = tmp_path / "label.tif", tmp_path / "mask.tif"
    tifffile.imwrite(label_path, label, tile=(64, 64), compression="zlib")
    tifffile.imwrite(mask_path, mask, tile=(32, 48), compression="zlib")  # other tiles than the label
    return label, mask, label_path, mask_path


def test_dice_equals_in_memory_monai_dice(label_and_mask):
    from monai.metrics import compute_dice
    from monai.networks.utils import one_hot

    label, mask, label_path, mask_path = label_and_mask
    dice = slide_dice(mask_path, label_path, num_classes=5)
    y = one_hot(torch.from_numpy(label[None, None].astype(np.int64)), 5)
    y_pred = one_hot(torch.from_numpy(mask[None, None].astype(np.int64)), 5)
    expected = compute_dice(y_pred, y, include_background=True, ignore_empty=True)[0].double().numpy()
    np.testing.assert_allclose(dice, expected, rtol=1e-6)  # MONAI counts in float32
    assert np.isnan(dice[4])  # class 4 is in neither slide
    assert slide_dice(mask_path, label_path, 5, ignore_empty=False)[4] == 1.0
    with open_slide(mask_path) as m, open_slide(label_path) as t:
        confusion = slide_confusion(m, t, 5)
        assert confusion.sum() == label.size
        assert m.tile_decodes == (300 // 32 + 1) * (520 // 48 + 1)  # every tile of the mask once


def test_bad_input(label_and_mask, tmp_path):
    label, mask, label_path, mask_path = label_and_mask
    other = tmp_path / "other.tif"
    tifffile.imwrite(other, label[:200], tile=(64, 64))
    with pytest.raises(ValueError, match="mask .*mask.tif is shaped \\(300, 520\\) but label .*other.tif is shaped"):
        slide_dice(mask_path, other, 4)
    with pytest.raises(
        ValueError, match="(mask|label) .*(mask|label).tif holds class 3 .* outside \\[0, num_classes=3\\)"
    ):
        slide_dice(mask_path, label_path, 3)
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((300, 520, 3), np.uint8), tile=(64, 64), photometric="rgb")
    with pytest.raises(ValueError, match="mask .*rgb.tif must be a one-channel"):
        slide_dice(rgb, label_path, 4)
