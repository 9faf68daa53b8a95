"""``monai-shf segment-volume`` and :func:`monai_shf.apps.volume.segment_volume` on a small OME-Zarr volume."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "volume"))
from volume_files import blob_volume, write_store  # noqa: E402

from monai_shf.apps.volume import segment_volume, volume_tokens  # noqa: E402
from monai_shf.cli import main  # noqa: E402
from monai_shf.forest import deserialize  # noqa: E402
from monai_shf.inference import SEGMENT_STAGES, load_network, load_settings, predict_tokens  # noqa: E402
from monai_shf.networks import SHFViT  # noqa: E402
from monai_shf.volume import build_volume_forest, open_volume  # noqa: E402

LENGTH, PATCH, CLASSES = 64, 4, 3
TINY = {"hidden_size": 32, "mlp_dim": 64, "num_layers": 1, "num_heads": 2}

INFERENCE_YAML = f"""
forest:
  length: {LENGTH}
  patch_size: {PATCH}
  min_size: 2
  kernel_size: 3
  thresholds: [50, 100]
in_channels: 1
num_classes: {CLASSES}
network_def:
  _target_: monai_shf.networks.SHFViT
  in_channels: "@in_channels"
  out_channels: "@num_classes"
  patch_size: "@forest#patch_size"
  length: "@forest#length"
  spatial_dims: 3
  hidden_size: {TINY["hidden_size"]}
  mlp_dim: {TINY["mlp_dim"]}
  num_layers: {TINY["num_layers"]}
  num_heads: {TINY["num_heads"]}
"""


@pytest.fixture(scope="module")
def volume_path(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("segment_volume")
    return write_store(folder / "vol.zarr", blob_volume(48), levels=3, chunk=16, spacing=(2.0, 1.0, 1.0))


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    (tmp_path / "bundle" / "configs").mkdir(parents=True)
    (tmp_path / "bundle" / "models").mkdir()
    (tmp_path / "bundle" / "configs" / "inference.yaml").write_text(INFERENCE_YAML)
    return tmp_path / "bundle"


def test_cli_writes_an_ngff_label_like_the_volume(volume_path, bundle, tmp_path, capsys):
    out = tmp_path / "mask.zarr"
    args = ["segment-volume", str(volume_path), "--out", str(out), "--bundle", str(bundle), "--untrained"]
    assert main(args + ["--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"of L={LENGTH} tokens" in printed and "peak RSS" in printed and "forest level 0" in printed
    assert all(f"{stage} " in printed for stage in SEGMENT_STAGES)
    mask, source = open_volume(out), open_volume(volume_path)
    assert mask.shape == source.shape and mask.spacing == source.spacing and mask.dtype == np.uint8
    values = mask.read(0, (0, 0, 0), mask.shape)
    assert values.max() < CLASSES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "mask.zarr"]  # no temporary left


def test_mask_is_the_in_memory_pipeline(volume_path, bundle, tmp_path):
    """The written mask is deserialize(argmax) of the network's probabilities on the volume's tokens."""
    result = segment_volume(volume_path, tmp_path / "m.zarr", bundle=bundle, untrained=True, max_side=24)
    assert result["forest_level"] == 1  # the score map of the 24^3 level
    source = open_volume(volume_path)
    forest = build_volume_forest(source, result["spec"])
    assert forest == result["forest"]
    parser = load_settings(bundle)
    network = load_network(parser, None, torch.device("cpu"))
    tokens = volume_tokens(source, forest, PATCH, result["intensity_range"])
    probs = predict_tokens(network, tokens, forest, "cpu")
    expected = np.asarray(deserialize(probs, forest, mode="linear", argmax=True))
    got = open_volume(result["out"]).read(0, (0, 0, 0), source.shape)
    assert (got == expected).mean() > 0.9999  # equal up to float near-ties of the resampling order


def test_checkpoint_weights_are_used(volume_path, bundle, tmp_path):
    torch.manual_seed(0)
    net = SHFViT(1, CLASSES, PATCH, LENGTH, spatial_dims=3, **TINY)
    with torch.no_grad():
        net.head.proj.weight.zero_()
        net.head.proj.bias.copy_(torch.tensor([0.0, 0.0, 5.0]).repeat_interleave(PATCH**3))
    torch.save({"model": net.state_dict()}, bundle / "models" / "best.pt")
    result = segment_volume(volume_path, tmp_path / "m.zarr", bundle=bundle)
    assert result["checkpoint"] == bundle / "models" / "best.pt"
    assert (open_volume(result["out"]).read(0, (0, 0, 0), (48, 48, 48)) == 2).all()


def test_bad_input_writes_nothing(volume_path, bundle, tmp_path):
    with pytest.raises(ValueError, match="no checkpoint"):
        segment_volume(volume_path, tmp_path / "m.zarr", bundle=bundle)
    with pytest.raises(ValueError, match="is the input"):
        segment_volume(volume_path, volume_path, bundle=bundle, untrained=True)
    with pytest.raises(ValueError, match="folder"):
        segment_volume(volume_path, tmp_path / "no" / "m.zarr", bundle=bundle, untrained=True)
    (tmp_path / "plain.zarr").mkdir()
    with pytest.raises(ValueError, match="plain.zarr"):
        segment_volume(tmp_path / "plain.zarr", tmp_path / "m.zarr", bundle=bundle, untrained=True)
    with pytest.raises(ValueError, match="unknown forest option"):
        segment_volume(volume_path, tmp_path / "m.zarr", bundle=bundle, untrained=True, overrides={"forest#lenth": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "plain.zarr"]
    assert main(["segment-volume", str(volume_path), "--out", str(tmp_path / "m.zarr"), "--bundle", str(bundle)]) == 2


def test_default_bundle_is_the_3d_bundle(volume_path, tmp_path):
    overrides = {"network_def#hidden_size": 32, "network_def#mlp_dim": 64, "network_def#num_layers": 1}
    overrides["network_def#num_heads"] = 2
    result = segment_volume(volume_path, tmp_path / "m.zarr", untrained=True, length=64, overrides=overrides)
    assert result["bundle"].name == "shf_3d_segmentation"
    assert result["spec"].max_side == 256 and result["patch_size"] == 4
