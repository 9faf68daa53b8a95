"""monai_shf.cli and monai_shf.visualize."""

from __future__ import annotations

import json

import numpy as np

from monai_shf.apps import patching_demo
from monai_shf.cli import main
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
    # the paper's forest on request: Canny edges and the edge count give another forest
    paper = patching_demo(tmp_path, 256, 8, 3, (50, 100), edge_kind="canny", criterion="edges")
    assert paper["leaf_sides"] != result["leaf_sides"] or paper["dice_soft_linear"] != result["dice_soft_linear"]


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


def test_demo_figure_shows_the_forest_the_pipeline_built(tmp_path):
    """The figure's forest is the validation pipeline's (PIL-loaded PNGs are (C, W, H) in MONAI), not the
    forest of the file's (H, W) array; the panels are shown in the file's orientation."""
    from monai.transforms import Compose, LoadImaged, ScaleIntensityRanged
    from PIL import Image

    from monai_shf.apps import demo_figure
    from monai_shf.forest import Forest
    from monai_shf.transforms import HierarchicalPatchd

    h, w = 40, 72
    yy, xx = np.mgrid[:h, :w]
    label = (((yy - 15) ** 2 + (xx - 50) ** 2) < 100).astype(np.uint8)
    rgb = np.stack([label * 200 + 20, (xx * 3).astype(np.uint8), np.full((h, w), 60, np.uint8)], axis=-1).astype(
        np.uint8
    )
    item = {"image": str(tmp_path / "img.png"), "label": str(tmp_path / "lab.png")}
    Image.fromarray(rgb).save(item["image"])
    Image.fromarray(label).save(item["label"])
    Image.fromarray(label).save(tmp_path / "pred.png")
    pre = Compose(
        [
            LoadImaged(["image", "label"], image_only=True, ensure_channel_first=True),
            ScaleIntensityRanged("image", 0, 255, 0.0, 1.0, clip=True),
            HierarchicalPatchd(["image", "label"], 64, 4, mode=("area", "nearest")),
            ScaleIntensityRanged("image", 0.0, 1.0, 0.0, 255.0),  # steps after the patcher act on tokens
        ]
    )
    figure, forest = demo_figure(pre, item, tmp_path / "pred.png")
    seen = Forest.from_dict(pre(dict(item))["image"].applied_operations[-1]["extra_info"]["forest"])
    assert forest == seen and forest.spatial_shape == (w, h)
    assert figure.shape == (28 + round(h * 512 / w), 4 * 516, 3)  # four panels in the file's (H, W) orientation
    overlay = figure[28:, 516 : 516 + 512]
    assert (overlay == [0, 255, 0]).all(axis=-1).sum() > 100  # the leaves are drawn


def test_sigterm_mid_command_leaves_no_temporary(tmp_path):
    """SLURM / Kubernetes preemption (SIGTERM) while make-slide writes: the command exits with 143
    and neither the slide nor a hidden temporary remains."""
    from test_utils import _terminated_mid_write

    script = (
        "import sys, time\n"
        "from monai_shf.data import synthetic_slides\n"
        "image = synthetic_slides._SlideRenderer.image\n"
        "def slow(self, *args):\n"
        "    time.sleep(0.2)\n"
        "    return image(self, *args)\n"
        "synthetic_slides._SlideRenderer.image = slow\n"
        "from monai_shf.cli import main\n"
        f"sys.exit(main(['make-slide', {str(tmp_path / 's.tif')!r}, '--size', '2048', '--tile', '256', '--no-label']))\n"
    )
    assert _terminated_mid_write(tmp_path, script) == 128 + 15
    assert list(tmp_path.iterdir()) == []


def test_every_command_taking_a_bundle_says_bundles_are_code(capsys):
    import argparse

    from monai_shf.cli import COMMANDS

    with_bundle = []
    for command in COMMANDS:
        parser = argparse.ArgumentParser(prog=command.name)
        command.arguments(parser)
        if any("--bundle" in action.option_strings for action in parser._actions):
            with_bundle.append(command.name)
            assert "trust" in parser.format_help() and "code" in parser.format_help(), command.name
    assert {"figure", "segment-slide"} <= set(with_bundle)


def test_cli_mask_to_geojson(tmp_path, capsys):
    import pytest

    pytest.importorskip("shapely")
    from monai_shf.data import make_slide

    _, label = make_slide(tmp_path / "s.tif", 512, tile=128)
    out = tmp_path / "s.geojson"
    assert main(["mask-to-geojson", str(label), str(out), "--simplify", "1", "--min-area", "20"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"geojson {out}") and "tissue" in printed and "polygons" in printed
    doc = json.loads(out.read_text())
    assert doc["features"] and {f["properties"]["objectType"] for f in doc["features"]} == {"annotation"}
    # --classes: names by position or value=name; a mask without names needs them
    assert main(["mask-to-geojson", str(label), str(out), "--classes", "1=cells,2=dab"]) == 0
    names = {f["properties"]["classification"]["name"] for f in json.loads(out.read_text())["features"]}
    assert names == {"cells", "dab"}
    assert main(["mask-to-geojson", str(label), str(out), "--classes", "glass,cells,dab"]) == 0
    assert main(["mask-to-geojson", str(tmp_path / "s.tif"), str(tmp_path / "x.geojson")]) == 2
    assert "3 channel(s)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["mask-to-geojson", str(label), str(out), "--classes", "1=a,x=b"])
    assert not (tmp_path / "x.geojson").exists()
