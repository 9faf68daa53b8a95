"""The bundles' `pretrained` entry: a local ViT weights file is loaded into the network before training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from monai_shf.bundles import bundle_path

TINY_NET = {
    "network_def#hidden_size": 32,
    "network_def#mlp_dim": 64,
    "network_def#num_layers": 1,
    "network_def#num_heads": 4,
}


def _vit_file(path: Path) -> dict[str, torch.Tensor]:
    """A 2-block timm-named ViT state dict (width 32, MLP 64, no qkv bias as the bundles' network)."""
    g = torch.Generator().manual_seed(0)
    sd = {"pos_embed": torch.zeros(1, 5, 32), "patch_embed.proj.weight": torch.randn(32, 3, 16, 16, generator=g) * 0.01}
    for i in range(2):
        for name, shape in {
            "norm1.weight": (32,),
            "attn.qkv.weight": (96, 32),
            "attn.proj.weight": (32, 32),
            "mlp.fc1.weight": (64, 32),
            "mlp.fc2.weight": (32, 64),
        }.items():
            sd[f"blocks.{i}.{name}"] = torch.randn(*shape, generator=g)
    torch.save(sd, path)
    return sd


def _network(kind: str, **overrides) -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(str(bundle_path(f"shf_{kind}_segmentation") / "configs" / "train.yaml"))
    parser.update({**TINY_NET, "forest#length": 16, "device": "$torch.device('cpu')", **overrides})
    return parser.get_parsed_content("network")


@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_bundle_loads_the_pretrained_file(kind, tmp_path):
    sd = _vit_file(tmp_path / "vit.pth")
    scratch = _network(kind)
    assert not torch.equal(scratch.blocks[0].attn.qkv.weight, sd["blocks.0.attn.qkv.weight"])  # default: off
    net = _network(kind, pretrained=str(tmp_path / "vit.pth"), pretrained_source="timm")
    assert torch.equal(net.blocks[0].attn.qkv.weight, sd["blocks.0.attn.qkv.weight"])
    assert torch.equal(net.blocks[0].mlp.fc2.weight, sd["blocks.0.mlp.fc2.weight"])
    assert net.pretrained_report.unused["blocks.1.norm1.weight"] == "block beyond num_layers=1"
    in_channels = 3 if kind == "2d" else 1  # the patch kernel follows the bundle's channels and dimension
    patch_size = net.patch_size
    assert net.token_embed.proj.weight.shape == (32, in_channels * patch_size ** (2 if kind == "2d" else 3))
    multi_gpu = (bundle_path(f"shf_{kind}_segmentation") / "configs" / "multi_gpu_train.yaml").read_text()
    assert "@network_init" in multi_gpu  # distributed training loads the same weights


def test_bundle_names_a_missing_pretrained_file(tmp_path):
    with pytest.raises(RuntimeError, match="load_pretrained") as info:  # MONAI wraps the error of a component
        _network("2d", pretrained=str(tmp_path / "absent.pth"))
    assert isinstance(info.value.__cause__, FileNotFoundError) and "absent.pth" in str(info.value.__cause__)
