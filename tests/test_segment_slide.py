"""``monai-shf segment-slide`` and :func:`monai_shf.inference.segment_slide` on a small generated slide."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_shf.bundles import bundle_path
from monai_shf.cli import main
from monai_shf.data import make_slide
from monai_shf.inference import (
    DEFAULT_BUNDLE,
    SEGMENT_STAGES,
    bundle_classes,
    find_bundle,
    load_network,
    load_settings,
    segment_slide,
)
from monai_shf.networks import SHFViT
from monai_shf.slide import build_slide_forest, open_slide, read_class_record, serialize_slide, write_slide_mask

LENGTH, PATCH, CLASSES = 256, 8, 3
TINY = {"hidden_size": 32, "mlp_dim": 64, "num_layers": 1, "num_heads": 2}

INFERENCE_YAML = f"""
forest:
  length: {LENGTH}
  patch_size: {PATCH}
  min_size: 2
  max_side: 512
  kernel_size: 3
  thresholds: [50, 100]
  channel_reduction: max
in_channels: 3
num_classes: {CLASSES}
intensity_range: [0, 255]
network_def:
  _target_: monai_shf.networks.SHFViT
  in_channels: "@in_channels"
  out_channels: "@num_classes"
  patch_size: "@forest#patch_size"
  length: "@forest#length"
  spatial_dims: 2
  hidden_size: {TINY["hidden_size"]}
  mlp_dim: {TINY["mlp_dim"]}
  num_layers: {TINY["num_layers"]}
  num_heads: {TINY["num_heads"]}
  use_flash_attention: true
"""


def tiny_network(seed: int = 0) -> SHFViT:
    torch.manual_seed(seed)
    return SHFViT(3, CLASSES, PATCH, LENGTH, use_flash_attention=True, **TINY).eval()


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated 1024 x 1536 pyramidal RGB slide (0.5 mpp, 256^2 tiles)."""
    folder = tmp_path_factory.mktemp("segment_slide")
    path, _ = make_slide(folder / "slide.tif", (1024, 1536), tile=256, mpp=0.5, label_out=False)
    return path


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    """A bundle folder with only ``configs/inference.yaml`` (a tiny SHFViT) and an empty ``models/``."""
    (tmp_path / "bundle" / "configs").mkdir(parents=True)
    (tmp_path / "bundle" / "models").mkdir()
    (tmp_path / "bundle" / "configs" / "inference.yaml").write_text(INFERENCE_YAML)
    return tmp_path / "bundle"


def read_level0(path: Path) -> tuple[np.ndarray, tuple, tuple]:
    with open_slide(path) as mask:
        return mask.read(0, (0, 0), mask.shape), mask.shape, mask.mpp


def test_untrained_cli_writes_a_mask_like_the_slide(slide_path, bundle, tmp_path, capsys):
    out = tmp_path / "mask.tif"
    rc = main(["segment-slide", str(slide_path), "--bundle", str(bundle), "--out", str(out), "--untrained"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert f"of L={LENGTH} tokens" in printed and "peak RSS" in printed
    assert all(f"{stage} " in printed for stage in SEGMENT_STAGES)
    values, shape, mpp = read_level0(out)
    with open_slide(slide_path) as source:
        assert shape == source.shape == (1024, 1536)
        assert mpp == pytest.approx(source.mpp)
    assert values.shape == (1, 1024, 1536) and values.dtype == np.uint8
    assert values.max() < CLASSES
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mask")]  # no temporary left


def test_checkpoint_weights_are_used(slide_path, bundle, tmp_path):
    """A checkpoint whose head always votes class 2 gives an all-2 mask; equal to the library path."""
    net = tiny_network()
    with torch.no_grad():
        net.head.proj.weight.zero_()
        net.head.proj.bias.copy_(torch.tensor([0.0, 0.0, 5.0]).repeat_interleave(PATCH * PATCH))
    torch.save({"model": net.state_dict()}, bundle / "models" / "best.pt")
    out = tmp_path / "mask.tif"
    result = segment_slide(slide_path, out, bundle=bundle)  # weights found in the bundle
    assert result["checkpoint"] == bundle / "models" / "best.pt"
    values, _, _ = read_level0(out)
    assert (values == 2).all()

    # a random checkpoint given explicitly (a bare state dict): the mask equals the library path by hand
    other = tiny_network(seed=3)
    torch.save(other.state_dict(), tmp_path / "other.pt")
    result = segment_slide(slide_path, out, bundle=bundle, checkpoint=tmp_path / "other.pt", probabilities=True)
    assert result["leaves"] <= LENGTH and set(result["seconds"]) == set(SEGMENT_STAGES)
    with open_slide(slide_path) as source:
        forest = build_slide_forest(source, LENGTH, max_side=512, patch_size=PATCH)
        tokens = np.clip(serialize_slide(source, forest, PATCH) / 255.0, 0, 1).astype(np.float32)
        with torch.inference_mode():
            logits = other(
                torch.from_numpy(tokens)[None],
                geom=torch.from_numpy(forest.geom())[None],
                token_mask=torch.from_numpy(forest.token_mask())[None],
            )
        probs = torch.softmax(logits[0], 0).numpy()
        write_slide_mask(tmp_path / "expected.tif", forest, probs, like=source, probabilities=True)
    got, _, _ = read_level0(out)
    expected, _, _ = read_level0(tmp_path / "expected.tif")
    assert got.shape == (CLASSES, 1024, 1536)
    # equal up to float rounding of the token scaling (x / 255 vs x * (1 / 255)): one quantisation step
    diff = np.abs(got.astype(np.int16) - expected)
    assert diff.max() <= 1 and np.count_nonzero(diff) < 1e-4 * diff.size
    assert len(np.unique(got[0])) > 1  # the weights produce a non-constant map


def test_untrained_weights_repeat_and_leave_the_rng_alone(bundle):
    parser = load_settings(bundle)
    state = torch.random.get_rng_state()
    first = load_network(parser, None, torch.device("cpu")).state_dict()
    second = load_network(load_settings(bundle), None, torch.device("cpu")).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(first[k], second[k]) for k in first)


# a bundle config of 0.1: the forest options at the top level, under their old names
LEGACY_YAML = f"""
length: {LENGTH}
patch_size: {PATCH}
min_size: 2
max_side: 512
kernel_size: 3
thresholds: [50, 100]
split_criterion: edges
edge_channel_reduction: max
in_channels: 3
num_classes: {CLASSES}
intensity_range: [0, 255]
network_def:
  _target_: monai_shf.networks.SHFViT
  in_channels: "@in_channels"
  out_channels: "@num_classes"
  patch_size: "@patch_size"
  length: "@length"
  spatial_dims: 2
  hidden_size: {TINY["hidden_size"]}
  mlp_dim: {TINY["mlp_dim"]}
  num_layers: {TINY["num_layers"]}
  num_heads: {TINY["num_heads"]}
"""


def test_one_spec_gives_one_forest_in_every_layer(slide_path, bundle, tmp_path):
    """The same spec gives the same forest through build_forest, HierarchicalPatchd, SlidePatchd and
    segment_slide (here on a slide small enough that max_side covers level 0)."""
    from monai_shf.forest import ForestSpec, build_forest, soft_edge_map
    from monai_shf.transforms import HierarchicalPatchd
    from monai_shf.transforms.slide import SlidePatchd

    spec = ForestSpec.create(length=LENGTH, patch_size=PATCH, max_side=2048, criterion="edges", kernel_size=5)
    with open_slide(slide_path) as source:
        image = source.read(0, (0, 0), source.shape)
    direct = build_forest(soft_edge_map(image, 5), spec)
    patched = HierarchicalPatchd("image", spec=spec)({"image": image})
    sliding = SlidePatchd("image", spec=spec)({"image": str(slide_path)})
    overrides = {f"forest#{k}": v for k, v in {"max_side": 2048, "criterion": "edges", "kernel_size": 5}.items()}
    result = segment_slide(slide_path, tmp_path / "m.tif", bundle=bundle, untrained=True, overrides=overrides)
    assert result["spec"] == spec
    assert result["forest"] == direct
    assert torch.equal(patched["geom"], torch.from_numpy(direct.geom()))
    assert torch.equal(sliding["geom"], torch.from_numpy(direct.geom()))
    # a misspelled option is an error in every layer, never ignored
    with pytest.raises(ValueError, match="did you mean 'criterion'"):
        HierarchicalPatchd("image", spec=spec, criterium="edges")
    with pytest.raises(ValueError, match="now called 'criterion'"):
        build_slide_forest(slide_path, spec, split_criterion="edges")
    with pytest.raises(ValueError, match="unknown forest option"):
        segment_slide(slide_path, tmp_path / "x.tif", bundle=bundle, untrained=True, overrides={"forest#kernel": 3})
    with pytest.raises(ValueError, match="no such config id"):
        segment_slide(slide_path, tmp_path / "x.tif", bundle=bundle, untrained=True, overrides={"lenght": 3})


def test_bundle_config_of_0_1_is_converted_with_a_warning(slide_path, bundle, tmp_path):
    (bundle / "configs" / "inference.yaml").write_text(LEGACY_YAML)
    with pytest.warns(UserWarning, match="Move them into a forest: mapping"):
        result = segment_slide(slide_path, tmp_path / "m.tif", bundle=bundle, untrained=True, length=LENGTH)
    assert result["spec"].criterion == "edges" and result["spec"].max_side == 512
    assert result["leaves"] <= LENGTH


def test_default_bundle_is_the_shipped_wsi_bundle(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # works from any folder: the bundle is package data
    assert find_bundle() == bundle_path(DEFAULT_BUNDLE)
    assert (find_bundle() / "configs" / "inference.yaml").is_file()
    assert find_bundle("shf_wsi_segmentation") == bundle_path("shf_wsi_segmentation")


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing slide", "slide file not found"),
        ("missing folder", "does not exist"),
        ("no checkpoint", "no checkpoint"),
        ("missing checkpoint", "checkpoint file not found"),
        ("wrong length", "does not fit the network"),
        ("not a bundle", "has no configs/inference.yaml"),
    ],
)
def test_bad_input_clear_error_and_no_file(case, message, slide_path, bundle, tmp_path, capsys):
    out = tmp_path / "out" / "mask.tif"
    out.parent.mkdir()
    args = ["segment-slide", str(slide_path), "--bundle", str(bundle), "--out", str(out), "--no-progress"]
    if case == "missing slide":
        args[1] = str(tmp_path / "nope.tif")
        args.append("--untrained")
    elif case == "missing folder":
        args[args.index(str(out))] = str(tmp_path / "no_such_folder" / "mask.tif")
        args.append("--untrained")
    elif case == "missing checkpoint":
        args += ["--checkpoint", str(tmp_path / "missing.pt")]
    elif case == "wrong length":
        torch.save({"model": tiny_network().state_dict()}, tmp_path / "tiny.pt")
        args += ["--checkpoint", str(tmp_path / "tiny.pt"), "--length", str(2 * LENGTH)]
    elif case == "not a bundle":
        args[args.index(str(bundle))] = str(tmp_path)
        args.append("--untrained")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert list(out.parent.iterdir()) == []  # nothing written, not even a temporary


def test_slide_channels_must_match_the_network(slide_path, bundle, tmp_path):
    (bundle / "configs" / "inference.yaml").write_text(INFERENCE_YAML.replace("in_channels: 3", "in_channels: 1"))
    with pytest.raises(ValueError, match="3 channels but the network expects 1"):
        segment_slide(slide_path, tmp_path / "mask.tif", bundle=bundle, untrained=True)
    assert not list(tmp_path.glob("*mask*"))


def test_out_is_never_the_slide_nor_a_link_to_it(slide_path, bundle, tmp_path):
    before = slide_path.read_bytes()
    (tmp_path / "link.tif").symlink_to(slide_path)
    os.link(slide_path, tmp_path / "hard.tif")
    for out in (tmp_path / "hard.tif", tmp_path / "link.tif", slide_path):
        with pytest.raises(ValueError, match="is the input"):
            segment_slide(slide_path, out, bundle=bundle, untrained=True)
    assert slide_path.read_bytes() == before


def test_geojson_is_named_by_the_bundle(slide_path, bundle, tmp_path, capsys):
    pytest.importorskip("shapely")
    (bundle / "configs" / "metadata.json").write_text('{"labels": ["glass", "tissue", "dab"]}')
    out, geojson = tmp_path / "mask.tif", tmp_path / "mask.geojson"
    result = segment_slide(slide_path, out, bundle=bundle, untrained=True, geojson=geojson)
    assert result["geojson"]["path"] == geojson and "geojson" in result["seconds"]
    assert set(result["geojson"]["features"]) == {"tissue", "dab"}
    assert read_class_record(out) == {0: ("glass", None), 1: ("tissue", None), 2: ("dab", None)}
    values, _, _ = read_level0(out)
    doc = json.loads(geojson.read_text())
    area = {name: 0.0 for name in ("tissue", "dab")}
    for feature in doc["features"]:
        area[feature["properties"]["classification"]["name"]] += shapely_area(feature)
    assert area == {"tissue": float((values == 1).sum()), "dab": float((values == 2).sum())}
    rc = main(
        ["segment-slide", str(slide_path), "--bundle", str(bundle), "--out", str(tmp_path / "m2.tif")]
        + ["--untrained", "--no-progress", "--geojson", str(tmp_path / "m2.geojson")]
    )
    assert rc == 0 and "geojson " in capsys.readouterr().out and (tmp_path / "m2.geojson").is_file()


def shapely_area(feature: dict) -> float:
    import shapely

    return float(shapely.area(shapely.from_geojson(json.dumps(feature["geometry"]))))


def test_geojson_bad_input(slide_path, bundle, tmp_path):
    out = tmp_path / "mask.tif"
    with pytest.raises(ValueError, match="label mask"):
        segment_slide(slide_path, out, bundle=bundle, untrained=True, probabilities=True, geojson=tmp_path / "a.json")
    with pytest.raises(ValueError, match="geojson .* is the input"):
        segment_slide(slide_path, out, bundle=bundle, untrained=True, geojson=out)
    with pytest.raises(ValueError, match="does not exist"):
        segment_slide(slide_path, out, bundle=bundle, untrained=True, geojson=tmp_path / "no" / "a.geojson")
    assert not out.exists()  # checked before the run


def test_bundle_classes(bundle):
    meta = bundle / "configs" / "metadata.json"
    assert bundle_classes(bundle, 3) == {0: "class 0", 1: "class 1", 2: "class 2"}  # no metadata
    meta.write_text('{"labels": {"1": "tumour"}}')
    assert bundle_classes(bundle, 2) == {0: "class 0", 1: "tumour"}
    meta.write_text('{"network_data_format": {"outputs": {"pred": {"channel_def": {"0": "bg", "1": "fg"}}}}}')
    assert bundle_classes(bundle, 2) == {0: "bg", 1: "fg"}
    meta.write_text("{not json")
    with pytest.raises(ValueError, match="metadata.json: not readable JSON"):
        bundle_classes(bundle, 2)
    shipped = bundle_classes(bundle_path(DEFAULT_BUNDLE), 3)
    assert shipped == {0: "background", 1: "tissue", 2: "DAB-positive"}
