"""The bundles' one-GPU fast-training config (configs/train_gpu.yaml on top of train.yaml), checked on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

import monai_shf.forest.device as forest_device
import monai_shf.forest.torch_forest as torch_forest
from monai_shf.bundles import bundle_path

BUNDLES = {"2d": bundle_path("shf_2d_segmentation"), "3d": bundle_path("shf_3d_segmentation")}
TINY_NET = {
    "network_def#hidden_size": 32,
    "network_def#mlp_dim": 64,
    "network_def#num_layers": 1,
    "network_def#num_heads": 4,
}
TINY = {
    "2d": {"num_train": 2, "num_val": 1, "image_size": 128, "forest#length": 64, **TINY_NET},
    "3d": {"num_train": 2, "num_val": 1, "volume_size": [32, 32, 24], "forest#length": 64, **TINY_NET},
}
RUN = {"max_epochs": 1, "val_interval": 1, "num_workers": 0, "progress_bar": False, "batch_size": 2}


def _workflow(kind: str, root, **overrides) -> ConfigWorkflow:
    configs = BUNDLES[kind] / "configs"
    return ConfigWorkflow(
        config_file=[str(configs / "train.yaml"), str(configs / "train_gpu.yaml")],
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        workflow_type="train",
        bundle_root=str(root),
        **{**TINY[kind], **RUN, **overrides},
    )


@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_gpu_config_wires_the_fast_training_recipe(kind, tmp_path):
    wf = _workflow(kind, tmp_path, device="$torch.device('cpu')")
    wf.initialize()
    parser = wf.parser
    from monai.data import ThreadDataLoader
    from monai.transforms import ToDeviced

    assert isinstance(parser.get_parsed_content("train#dataloader"), ThreadDataLoader)
    assert parser.get_parsed_content("train#dataloader#num_workers") == 0
    steps = parser.get_parsed_content("train#preprocessing").transforms
    names = [type(t).__name__ for t in steps]
    # the cache (deterministic steps) ends on the device; the random steps (flips, patching) follow it
    assert names.index("ToDeviced") == len(parser.get_parsed_content("train#deterministic_transforms"))
    assert names.index("ToDeviced") < names.index("RandHierarchicalPatchd")
    assert isinstance(steps[names.index("ToDeviced")], ToDeviced)
    assert parser.get_parsed_content("train#trainer").amp_kwargs == {"dtype": torch.bfloat16}
    assert parser.get_parsed_content("network_def").use_flash_attention
    # with a CUDA device, AMP is on; on the CPU override it is off
    assert parser.get_parsed_content("amp") is False
    default = _workflow(kind, tmp_path)
    assert default.parser.get_parsed_content("device") == torch.device("cuda:0")


@pytest.mark.parametrize(
    "kind, overrides, torch_builds",
    [
        ("2d", {}, 3),
        # voxel-cube octrees: the torch build; the default spacing-aware octree (the generated volumes are
        # 1.5 x 1.5 x 2.5 mm after Spacingd) has the numpy build only
        ("3d", {"patch_spacing": None}, 3),
        ("3d", {}, 0),
    ],
)
def test_gpu_config_trains_one_iteration_on_the_torch_path(kind, overrides, torch_builds, tmp_path, monkeypatch):
    """CPU tensors routed as device tensors: the patching in the training loop builds its forests with the
    torch build (as it does on a GPU) unless the octree is spacing-aware, and one epoch (one iteration plus
    validation) runs."""
    monkeypatch.setattr(forest_device, "on_accelerator", lambda x: isinstance(x, torch.Tensor))
    built = []
    original = torch_forest.build_forest_torch

    def spy(*args, **kwargs):
        built.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch_forest, "build_forest_torch", spy)
    wf = _workflow(kind, tmp_path, device="$torch.device('cpu')", **overrides)
    wf.initialize()
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 1 and trainer.state.iteration == 1
    assert np.isfinite(float(trainer.state.output[0]["loss"]))
    # the two training samples and the validation sample (or none: spacing-aware octrees)
    assert len(built) >= torch_builds if torch_builds else built == [], built
