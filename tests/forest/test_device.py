"""Which inputs take the torch path (``monai_shf.forest.device``), and the dispatch in build_forest/soft_edge_map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import monai_shf.forest.device as device
from monai_shf.forest import ForestSpec, build_forest, edge_forest, soft_edge_map
from monai_shf.forest.torch_edges import SOFT_EDGE_TOLERANCE


def test_on_accelerator():
    assert not device.on_accelerator(np.zeros((4, 4)))
    assert not device.on_accelerator(torch.zeros(4, 4))
    assert not device.on_accelerator(torch.zeros(4, 4, device="meta"))
    assert not device.on_accelerator([1, 2])
    if torch.cuda.is_available():
        assert device.on_accelerator(torch.zeros(4, 4, device="cuda"))


@pytest.fixture()
def every_tensor_on_device(monkeypatch):
    """CPU tensors routed like device tensors: the dispatch and the torch path run without a GPU."""
    calls = []

    def on_accelerator(x):
        routed = isinstance(x, torch.Tensor)
        calls.append(routed)
        return routed

    monkeypatch.setattr(device, "on_accelerator", on_accelerator)
    return calls


def test_dispatch_to_the_torch_path(every_tensor_on_device, monkeypatch):
    import monai_shf.forest.torch_edges as torch_edges
    import monai_shf.forest.torch_forest as torch_forest

    used = []
    for module, name in ((torch_forest, "build_forest_torch"), (torch_edges, "soft_edge_map_torch")):
        original = getattr(module, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            used.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (3, 48, 40)).astype(np.uint8)
    edges = soft_edge_map(torch.from_numpy(image))
    assert isinstance(edges, torch.Tensor) and used == ["soft_edge_map_torch"]
    assert int((edges.int() - torch.from_numpy(soft_edge_map(image)).int()).abs().max()) <= SOFT_EDGE_TOLERANCE
    assert build_forest(edges, 60) == build_forest(edges.numpy(), 60)
    assert used == ["soft_edge_map_torch", "build_forest_torch"]
    spec = ForestSpec.create(50)
    forest = edge_forest(torch.from_numpy(image), spec)  # soft edges and the build on the "device"
    assert used[2:] == ["soft_edge_map_torch", "build_forest_torch"]
    assert forest == build_forest(soft_edge_map(torch.from_numpy(image)).numpy(), spec)
    canny = ForestSpec.create(50, edge_kind="canny")
    edge_forest(torch.from_numpy(image), canny)  # Canny needs the host: the image is copied, the numpy build runs
    assert len(used) == 5 and used[4] == "soft_edge_map_torch"


def test_anisotropic_spacing_takes_the_numpy_build_of_a_device_score(monkeypatch):
    """Spacing-aware forests exist in the numpy build only: a device score with anisotropic spacing is built
    there (the same forest as from the host array); isotropic spacing keeps the torch build."""
    from monai_shf.forest import torch_forest

    score = torch.randint(0, 255, (32, 32, 16), dtype=torch.uint8)
    expected = build_forest(score.numpy(), 64, spacing=(1.0, 1.0, 4.0))
    monkeypatch.setattr(device, "on_accelerator", lambda x: isinstance(x, torch.Tensor))
    calls = []
    original = torch_forest.build_forest_torch
    monkeypatch.setattr(torch_forest, "build_forest_torch", lambda *a, **k: calls.append(1) or original(*a, **k))
    assert build_forest(score, 64, spacing=(1.0, 1.0, 4.0)) == expected and calls == []
    assert build_forest(score, 64, spacing=(2.0, 2.0, 2.0)) == build_forest(score.numpy(), 64) and calls == [1]
