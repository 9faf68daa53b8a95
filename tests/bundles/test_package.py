"""monai_shf.bundles: the shipped bundles as package data, listed and exported."""

from __future__ import annotations

import json

import pytest

from monai_shf.bundles import BUNDLE_FILES, apply_overrides, bundle_path, export_bundle, list_bundles
from monai_shf.cli import main

NAMES = ["shf_2d_segmentation", "shf_3d_segmentation", "shf_wsi_segmentation"]


def test_the_three_bundles_are_shipped_in_model_zoo_layout():
    assert list_bundles() == NAMES
    for name in NAMES:
        root = bundle_path(name)
        assert all((root / f).is_file() for f in BUNDLE_FILES)
        assert (root / "configs" / "train.yaml").is_file() and (root / "docs" / "README.md").is_file()
        meta = json.loads((root / "configs" / "metadata.json").read_text())
        assert meta["version"] in meta["changelog"]
        # bundle_root is the runner's (MONAI model-zoo convention), never guessed from the working directory
        for config in ("train.yaml", "inference.yaml"):
            assert "\nbundle_root: .  #" in (root / "configs" / config).read_text()


def test_unknown_bundle_names_the_shipped_ones():
    with pytest.raises(ValueError, match="shf_2d_segmentation"):
        bundle_path("shf_4d_segmentation")
    with pytest.raises(TypeError, match="name"):
        bundle_path(3)


def test_export_copies_configs_and_refuses_to_overwrite(tmp_path):
    dest = export_bundle("shf_3d_segmentation", tmp_path / "my3d")
    assert sorted(p.name for p in dest.iterdir()) == ["LICENSE", "configs", "docs"]
    assert (dest / "configs" / "inference.yaml").read_text() == (
        bundle_path("shf_3d_segmentation") / "configs" / "inference.yaml"
    ).read_text()
    with pytest.raises(ValueError, match="exists"):
        export_bundle("shf_3d_segmentation", dest)
    with pytest.raises(ValueError, match="parent folder"):
        export_bundle("shf_3d_segmentation", tmp_path / "missing" / "b")
    assert [p.name for p in tmp_path.iterdir()] == ["my3d"]  # no temporary left


def test_cli_bundle_list_and_export(tmp_path, capsys):
    assert main(["bundle", "list"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in NAMES)
    assert main(["bundle", "export", "shf_2d_segmentation", str(tmp_path / "b")]) == 0
    printed = capsys.readouterr().out
    assert "--bundle_root" in printed and "trust" in printed
    assert (tmp_path / "b" / "configs" / "train.yaml").is_file()
    assert main(["bundle", "export", "no_such", str(tmp_path / "c")]) == 2
    assert "no bundle named 'no_such'" in capsys.readouterr().err


def test_overrides_must_name_existing_ids():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle_path("shf_2d_segmentation") / "configs" / "inference.yaml"))
    apply_overrides(parser, {"forest#length": 64, "forest#criterion": "edges", "network_def#num_layers": 1})
    assert parser["forest"]["length"] == 64 and parser["forest"]["criterion"] == "edges"
    with pytest.raises(ValueError, match="no such config id"):
        apply_overrides(parser, {"lenght": 64})
    with pytest.raises(ValueError, match="now called 'criterion'"):
        apply_overrides(parser, {"forest#split_criterion": "edges"})
    with pytest.raises(ValueError, match="length"):
        apply_overrides(parser, {"forest#length": 0})
