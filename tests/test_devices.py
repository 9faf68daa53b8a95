"""Device contract: what goes in on a device comes out on that device (tokens, edges, network outputs,
depatched images), and edges reach the forest build on the host without a round trip through the device.

Parametrised over ``cpu`` and ``cuda`` (skipped where no GPU is present); every case compares the
device result with the CPU result, so a CUDA run checks values as well as placement.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd

import monai_shf.forest.tree as tree
from monai_shf.forest import build_forest, deserialize, edge_map, serialize, soft_edge_map
from monai_shf.networks import SHFViT
from monai_shf.transforms import Depatch, Depatchd, EdgeMap, HierarchicalPatch, HierarchicalPatchd

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")),
]
LENGTH, PATCH = 64, 4


def _image(side: int = 64) -> np.ndarray:
    """``(3, side, side)`` uint8 RGB: two discs of different colours on a ramp (edges in every channel)."""
    yy, xx = np.mgrid[:side, :side]
    ramp = (xx * 2).astype(np.uint8)
    disc_a = (yy - side // 3) ** 2 + (xx - side // 3) ** 2 < (side // 5) ** 2
    disc_b = (yy - 2 * side // 3) ** 2 + (xx - 2 * side // 3) ** 2 < (side // 6) ** 2
    image = np.stack([ramp, ramp // 2, np.zeros_like(ramp)])
    image[0][disc_a] = 220
    image[2][disc_b] = 180
    return image


def _on(device: str, array: np.ndarray) -> MetaTensor:
    return MetaTensor(torch.from_numpy(array)).to(device)


def _same_device(tensor: torch.Tensor, device: str) -> bool:
    return tensor.device.type == torch.device(device).type


@pytest.mark.parametrize("device", DEVICES)
def test_edge_map_of_a_tensor_stays_on_its_device(device):
    image = _image()
    edges = edge_map(_on(device, image))
    assert isinstance(edges, torch.Tensor) and _same_device(edges, device) and edges.dtype == torch.bool
    np.testing.assert_array_equal(edges.cpu().numpy(), edge_map(image))
    out = EdgeMap()(_on(device, image))
    assert _same_device(out, device) and out.shape == (1, 64, 64)


@pytest.mark.parametrize("device", DEVICES)
def test_edges_reach_the_build_as_host_numpy(device, monkeypatch):
    """edge_forest hands numpy edges to build_forest: no copy to the device and back."""
    seen = []

    def spy(score, *args, **kwargs):
        seen.append(score)
        return build_forest(score, *args, **kwargs)

    monkeypatch.setattr(tree, "build_forest", spy)
    forest = HierarchicalPatch(LENGTH, PATCH).build(_on(device, _image()))
    assert len(seen) == 1 and isinstance(seen[0], np.ndarray) and seen[0].dtype == np.uint8
    assert forest == build_forest(soft_edge_map(_image()), LENGTH, patch_size=PATCH)


@pytest.mark.parametrize("device", DEVICES)
def test_serialize_and_deserialize_stay_on_the_device(device):
    image = _image()
    forest = build_forest(edge_map(image), LENGTH)
    tokens = serialize(_on(device, image), forest, PATCH)
    assert _same_device(tokens, device) and tokens.shape == (3, LENGTH, PATCH, PATCH)
    np.testing.assert_allclose(tokens.cpu().numpy(), serialize(image, forest, PATCH), rtol=1e-6, atol=1e-4)
    back = deserialize(tokens, forest, "linear")
    assert _same_device(back, device) and back.shape == (3, 64, 64)
    labels = deserialize(tokens[:1].round().to(torch.int64), forest, "nearest")
    assert _same_device(labels, device)


@pytest.mark.parametrize("device", DEVICES)
def test_patch_and_depatch_transforms_stay_on_the_device(device):
    image = _image()
    patcher = HierarchicalPatch(LENGTH, PATCH)
    tokens = patcher(_on(device, image))
    assert isinstance(tokens, MetaTensor) and _same_device(tokens, device)
    np.testing.assert_allclose(tokens.cpu().numpy(), patcher(image).numpy(), rtol=1e-6, atol=1e-4)
    restored = patcher.inverse(tokens.clone())
    assert _same_device(restored, device) and restored.shape == (3, 64, 64)
    depatched = Depatch()(tokens)
    assert _same_device(depatched, device)
    np.testing.assert_allclose(depatched.cpu().numpy(), restored.cpu().numpy(), rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_dictionary_patch_depatchd_and_invertd_stay_on_the_device(device):
    image = _image()
    label = (image[:1] > 150).astype(np.uint8)
    pre = Compose([HierarchicalPatchd(["image", "label"], LENGTH, PATCH, mode=("area", "nearest"))])
    sample = pre({"image": _on(device, image), "label": _on(device, label)})
    assert _same_device(sample["image"], device) and _same_device(sample["label"], device)
    assert sample["image"].shape == (3, LENGTH, PATCH, PATCH)
    pred = sample["label"].clone().float()  # a "prediction" that carries the patch record
    inverted = Invertd("pred", transform=pre, orig_keys="label", nearest_interp=True)({**sample, "pred": pred})
    assert _same_device(inverted["pred"], device) and inverted["pred"].shape == (1, 64, 64)
    forest = build_forest(soft_edge_map(image), LENGTH, patch_size=PATCH)
    expected = deserialize(serialize(label, forest, PATCH, mode="nearest"), forest, "nearest")
    np.testing.assert_array_equal(inverted["pred"].cpu().numpy(), expected.astype(np.float32))
    depatched = Depatchd("image", ref_key="image")(dict(sample))
    assert _same_device(depatched["image"], device) and depatched["image"].shape == (3, 64, 64)


@pytest.mark.parametrize("device", DEVICES)
def test_shfvit_outputs_stay_on_the_device(device):
    torch.manual_seed(0)
    net = SHFViT(3, 2, PATCH, LENGTH, hidden_size=32, mlp_dim=64, num_layers=1, num_heads=2).eval()
    image = _image()
    sample = HierarchicalPatchd("image", LENGTH, PATCH)({"image": MetaTensor(torch.from_numpy(image).float())})
    x, geom, mask = sample["image"].as_tensor()[None], sample["geom"][None], sample["token_mask"][None]
    with torch.no_grad():
        expected = net(x, geom, mask)
        out = net.to(device)(x.to(device), geom.to(device), mask.to(device))
    assert _same_device(out, device) and out.shape == (1, 2, LENGTH, PATCH, PATCH)
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-3, atol=1e-3)
