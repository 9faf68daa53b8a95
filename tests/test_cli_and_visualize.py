"""monai_shf.cli and monai_shf.visualize."""

from __future__ import annotations

import json

import numpy as np

from monai_shf.cli import main, patching_demo
from monai_shf.forest import build_forest
from monai_shf.visualize import forest_overlay, panels, save_png, to_rgb


def test_overlay_and_panels(tmp_path):
    image = np.random.default_rng(0).random((1, 64, 48)).astype(np.float32)
    forest = build_forest(image[0] > 0.9, 22)
    overlay = forest_overlay(image, forest)
    assert overlay.shape == (64, 48, 3) and overlay.dtype == np.uint8
    assert (overlay == [0, 255, 0]).all(axis=-1).sum() > 64  # leaf outlines drawn
    figure = panels([to_rgb(image), overlay], ["a", "b"], width=100)
    assert figure.shape[1] == 2 * 104
    path = save_png(tmp_path / "f.png", figure)
    assert path.stat().st_size > 0
    volume = np.random.default_rng(0).random((1, 16, 16, 8))
    assert forest_overlay(volume, build_forest(volume[0] > 0.5, 15)).shape == (16, 16, 3)


def test_patching_demo_reports_fidelity(tmp_path):
    result = patching_demo(tmp_path, length=256, patch_size=8, kernel_size=3, thresholds=(50, 100))
    assert result["leaves"] <= 256 and result["padding"] <= 2
    assert 0.9 < result["dice_soft_linear"] <= 1.0
    assert (tmp_path / "forest_overlay.png").is_file()


def test_datalist_command(tmp_path, capsys):
    import nibabel as nib

    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    for i in range(3):
        for folder, prefix in (("imagesTr", "img"), ("labelsTr", "label")):
            nib.save(
                nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)),
                str(tmp_path / folder / f"{prefix}{i:04d}.nii.gz"),
            )
    assert main(["datalist", str(tmp_path), "--layout", "msd", "--val-fraction", "0.34"]) == 0
    made = json.loads((tmp_path / "datalist.json").read_text())
    assert len(made["training"]) == 2 and len(made["validation"]) == 1
    assert "2 training, 1 validation" in capsys.readouterr().out
