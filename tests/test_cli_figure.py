"""``monai-shf figure``: the paper's Figure 1 for any image/label pair."""

from __future__ import annotations

from pathlib import Path

import cv2 as cv
import numpy as np
import pytest
import torch

from monai_shf.apps import shf_figure
from monai_shf.bundles import bundle_path
from monai_shf.cli import main

BUNDLE_2D = bundle_path("shf_2d_segmentation")

TINY = {
    "forest#length": 64,
    "network_def#hidden_size": 32,
    "network_def#mlp_dim": 64,
    "network_def#num_layers": 1,
    "network_def#num_heads": 4,
}


def _pair_2d(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    label = np.zeros((96, 128), np.uint8)
    label[16:48, 32:80] = 1
    label[60:90, 8:40] = 1
    image = np.stack([label * 180 + rng.integers(0, 40, label.shape, dtype=np.uint8)] * 3, axis=-1).astype(np.uint8)
    cv.imwrite(str(tmp_path / "image.png"), image)
    cv.imwrite(str(tmp_path / "label.png"), label)
    return tmp_path / "image.png", tmp_path / "label.png"


def _tiny_checkpoint(tmp_path: Path) -> Path:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE_2D / "configs" / "train.yaml"))
    for key, value in TINY.items():
        parser[key] = value
    torch.manual_seed(0)
    path = tmp_path / "best.pt"
    torch.save({"model": parser.get_parsed_content("network_def").state_dict()}, path)
    return path


def test_figure_without_checkpoint_shows_the_upper_bound(tmp_path):
    image, label = _pair_2d(tmp_path)
    result = shf_figure(image, label, tmp_path / "fig.png", overrides=TINY, width=128)
    figure = cv.imread(result["figure"])
    assert figure.shape[1] == 4 * (128 + 4)  # four panels per row
    assert figure.shape[0] > 2 * 128
    assert result["leaves"] <= 64 and result["dice"] is None
    assert 0.9 < result["upper_bound_dice"] <= 1.0


def test_figure_with_checkpoint_adds_the_prediction(tmp_path, capsys):
    image, label = _pair_2d(tmp_path)
    checkpoint = _tiny_checkpoint(tmp_path)
    sets = [f"--set={k}={v}" for k, v in TINY.items()]
    out = tmp_path / "figure.png"
    assert main(["figure", str(image), str(label), "--checkpoint", str(checkpoint), *sets, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "prediction Dice" in printed and "upper bound Dice" in printed
    figure = cv.imread(str(out))
    # the lower right panel (the depatched prediction) holds class colours, not the blank "no checkpoint" note
    lower_right = figure[figure.shape[0] // 2 + 40 :, -200:]
    assert (lower_right != 255).any()
    # a checkpoint of another network size is refused with a clear message
    with pytest.raises(ValueError, match="does not fit the network"):
        shf_figure(image, label, tmp_path / "x.png", checkpoint=checkpoint, overrides={"forest#length": 128})


def test_figure_refuses_bad_input(tmp_path):
    image, label = _pair_2d(tmp_path)
    many = tmp_path / "many.png"
    cv.imwrite(str(many), (np.arange(96 * 128).reshape(96, 128) % 5).astype(np.uint8))
    with pytest.raises(ValueError, match="--binarize"):
        shf_figure(image, many, tmp_path / "x.png", overrides=TINY)
    assert shf_figure(image, many, tmp_path / "x.png", overrides=TINY, binarize=True)["leaves"] > 0
    with pytest.raises(ValueError, match="label file not found"):
        shf_figure(image, tmp_path / "missing.png", tmp_path / "x.png")
    with pytest.raises(SystemExit):
        main(["figure", str(image), str(label), "--set", "no_equals_sign", "--out", str(tmp_path / "x.png")])


def test_figure_3d_bundle(tmp_path):
    import nibabel as nib

    label = np.zeros((32, 32, 24), np.uint8)
    label[8:20, 8:24, 6:18] = 1
    label[10:16, 12:20, 8:14] = 2
    image = (label * 100 - 100).astype(np.float32)
    nib.save(nib.Nifti1Image(image, np.diag([1.5, 1.5, 2.5, 1.0])), tmp_path / "image.nii.gz")
    nib.save(nib.Nifti1Image(label, np.diag([1.5, 1.5, 2.5, 1.0])), tmp_path / "label.nii.gz")
    bundle = BUNDLE_2D.parent / "shf_3d_segmentation"
    result = shf_figure(
        tmp_path / "image.nii.gz", tmp_path / "label.nii.gz", tmp_path / "fig3d.png", bundle=bundle, overrides=TINY
    )
    assert cv.imread(result["figure"]) is not None
    assert 0.5 < result["upper_bound_dice"] <= 1.0
