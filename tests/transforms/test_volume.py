"""Out-of-core volume transforms: OME-Zarr paths in, exactly HierarchicalPatchd's output out."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor, decollate_batch
from monai.transforms import Compose, Invertd

sys.path.insert(0, str(Path(__file__).parents[1] / "volume"))
from volume_files import blob_volume, write_store  # noqa: E402

from monai_shf.forest import Forest, deserialize  # noqa: E402
from monai_shf.transforms import HierarchicalPatchd, RandHierarchicalPatchd  # noqa: E402
from monai_shf.transforms.functional import forest_from_trace  # noqa: E402
from monai_shf.transforms.volume import RandVolumePatchd, VolumePatchd  # noqa: E402
from monai_shf.volume import build_volume_forest  # noqa: E402

LENGTH, PATCH = 512, 8


def _label(x: np.ndarray) -> np.ndarray:
    return ((x > 40).astype(np.uint8) + (x > 120).astype(np.uint8)).astype(np.uint8)


def _pair(folder: Path, n: int, chunk: int) -> tuple[dict[str, str], np.ndarray, np.ndarray]:
    x = blob_volume(n)
    lab = _label(x)
    image = write_store(folder / "case.zarr", x, levels=4, chunk=chunk, spacing=(2.0, 1.0, 1.0))
    label = write_store(folder / "case_label.zarr", lab, levels=4, chunk=chunk, spacing=(2.0, 1.0, 1.0))
    return {"image": str(image), "label": str(label)}, x, lab


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    return _pair(tmp_path_factory.mktemp("v256"), 256, 64)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return _pair(tmp_path_factory.mktemp("v32"), 32, 8)


def _in_memory(x: np.ndarray, lab: np.ndarray, length: int, **kwargs) -> dict:
    data = {"image": MetaTensor(torch.from_numpy(x)[None]), "label": MetaTensor(torch.from_numpy(lab)[None])}
    return HierarchicalPatchd(["image", "label"], length, PATCH, **kwargs)(data)


def test_volume_patch_equals_in_memory_patch_256(big):
    paths, x, lab = big
    kwargs = {"mode": ["area", "fraction"], "num_classes": [None, 3]}
    out = VolumePatchd(["image", "label"], LENGTH, PATCH, **kwargs)(paths)
    ref = _in_memory(x, lab, LENGTH, **kwargs)
    forest, info = forest_from_trace(out["image"])
    ref_forest, ref_info = forest_from_trace(ref["image"])
    assert forest == ref_forest and forest.spatial_shape == (256, 256, 256)
    assert info["mode"] == ref_info["mode"] and info["serialize_mode"] == ref_info["serialize_mode"]
    assert (forest.sizes > PATCH).any()  # coarse levels are really read for the image
    for key in ("image", "label"):
        assert out[key].shape == ref[key].shape and out[key].dtype == ref[key].dtype
        assert torch.allclose(out[key].as_tensor(), ref[key].as_tensor(), rtol=1e-6, atol=1e-4), key
    assert torch.equal(out["label"].as_tensor(), ref["label"].as_tensor())  # level 0: exact fractions
    assert torch.equal(out["geom"], ref["geom"]) and torch.equal(out["token_mask"], ref["token_mask"])
    assert out["image"].meta["filename_or_obj"] == paths["image"]
    assert tuple(out["image"].meta["spatial_shape"]) == (256, 256, 256)
    assert out["image"].meta["spacing"] == (2.0, 1.0, 1.0)
    assert float(out["image"].affine[0, 0]) == pytest.approx(2e-3)  # micrometres -> mm


def test_invertd_restores_full_resolution(small):
    paths, _, lab = small
    pre = Compose([VolumePatchd(["image", "label"], 64, 4, mode=["area", "fraction"], num_classes=[None, 3])])
    data = pre(paths)
    data["pred"] = data["label"].clone()
    inverted = Invertd(keys="pred", transform=pre, orig_keys="label", nearest_interp=False)(data)
    forest, _ = forest_from_trace(data["label"])
    expected = deserialize(data["label"].as_tensor(), forest, mode="linear")
    assert tuple(inverted["pred"].shape) == (3, 32, 32, 32)
    assert torch.allclose(inverted["pred"].as_tensor(), expected, atol=1e-5)
    agree = (inverted["pred"].argmax(0).numpy() == lab).mean()
    assert agree > 0.9


def test_dataloader_workers_and_decollate(small):
    paths, _, _ = small
    transform = VolumePatchd(["image", "label"], 64, 4, mode=["area", "nearest"])
    direct = transform(paths)
    loader = DataLoader(Dataset([paths, paths], transform), batch_size=2, num_workers=2)
    batch = next(iter(loader))
    assert tuple(batch["image"].shape) == (2, 1, 64, 4, 4, 4)
    assert tuple(batch["geom"].shape) == (2, 64, 6) and batch["token_mask"].dtype == torch.bool
    items = decollate_batch(batch)
    assert len(items) == 2
    forest, _ = forest_from_trace(items[1]["label"])
    assert isinstance(forest, Forest) and forest == forest_from_trace(direct["label"])[0]
    assert torch.equal(items[1]["image"].as_tensor(), direct["image"].as_tensor())


def test_random_version_is_seeded_and_matches_in_memory(small):
    paths, x, lab = small
    a = RandVolumePatchd("image", 64, 4).set_random_state(seed=3)
    b = RandHierarchicalPatchd("image", 64, 4).set_random_state(seed=3)
    drawn = set()
    for _ in range(4):
        fa = forest_from_trace(a(paths)["image"])[0]
        fb = forest_from_trace(b({"image": torch.from_numpy(x)[None]})["image"])[0]
        assert fa == fb
        drawn.add((a.drawn_spec.edges.kernel_size, a.drawn_spec.edges.thresholds))
    assert len(drawn) > 1


def test_spec_reaches_the_volume_forest(small):
    paths, _, _ = small
    out = VolumePatchd("image", spec={"length": 40, "patch_size": 4, "max_side": 16, "min_size": 2})(paths)
    expected = build_volume_forest(paths["image"], 40, patch_size=4, max_side=16)
    assert forest_from_trace(out["image"])[0] == expected
    canny = VolumePatchd("image", 40, 4, edge_kind="canny", edge_method="slicewise")(paths)
    assert forest_from_trace(canny["image"])[0] == build_volume_forest(
        paths["image"], 40, patch_size=4, edge_kind="canny", edge_method="slicewise"
    )


def test_bad_input(small, tmp_path):
    paths, x, _ = small
    patch = VolumePatchd(["image", "label"], 64, 4, mode=["area", "nearest"])
    for cls in (VolumePatchd, RandVolumePatchd):
        with pytest.raises(TypeError, match=f"{cls.__name__} takes no score_key"):
            cls("image", 64, 4, score_key="score")
    with pytest.raises(FileNotFoundError, match="missing.zarr"):
        patch({"image": str(tmp_path / "missing.zarr"), "label": paths["label"]})
    other = write_store(tmp_path / "short_label.zarr", _label(x)[:16], levels=2, chunk=8)
    with pytest.raises(ValueError, match=r"short_label\.zarr.*level-0 shape"):
        patch({"image": paths["image"], "label": str(other)})
    with pytest.raises(TypeError, match="OME-Zarr store path"):
        patch({"image": np.zeros((1, 8, 8, 8)), "label": paths["label"]})
    with pytest.raises(ValueError, match="ref_key"):
        patch({"label": paths["label"]})


def test_volume_transforms_have_the_monai_aliases():
    from monai_shf.transforms import volume

    for name in ("VolumePatch", "RandVolumePatch"):
        for alias in (f"{name}D", f"{name}Dict"):
            assert getattr(volume, alias) is getattr(volume, f"{name}d") and alias in volume.__all__, alias
