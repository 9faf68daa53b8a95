"""Whole-slide transforms: slide paths in, exactly HierarchicalPatchd's output out; masks written as pyramids."""

from __future__ import annotations

from pathlib import Path

import cv2 as cv
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor, decollate_batch
from monai.transforms import Compose, Invertd

from monai_shf.forest import Forest, deserialize
from monai_shf.slide import open_slide, write_pyramid
from monai_shf.transforms import HierarchicalPatchd
from monai_shf.transforms.functional import forest_from_trace
from monai_shf.transforms.slide import RandSlidePatchd, SaveSlideMaskd, SlideDiced, SlidePatchd

LENGTH, PATCH = 256, 8


def _tissue(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An ``(H, W, 3)`` uint8 image with edges of several scales and its 3-class ``(H, W)`` uint8 label."""
    rng = np.random.default_rng(seed)
    low = cv.resize(rng.random((h // 32, w // 32)).astype(np.float32), (w, h), interpolation=cv.INTER_CUBIC)
    label = np.zeros((h, w), np.uint8)
    label[low > 0.45] = 1
    label[low > 0.7] = 2
    palette = np.array([[230, 220, 225], [170, 90, 150], [90, 60, 140]], np.float32)
    image = palette[label] + rng.normal(0, 6, (h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8), label


def _write(path: Path, array: np.ndarray, levels: int | None = 1, mpp: float | None = 0.5) -> Path:
    """Write ``array`` ``(H, W[, C])`` as a tiled TIFF (one level by default: the reference is level 0)."""
    channels = array.shape[2] if array.ndim == 3 else 1

    def render(level: int, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        step = 2**level
        return np.ascontiguousarray(array[y0 * step : (y0 + h) * step : step, x0 * step : (x0 + w) * step : step])

    return write_pyramid(path, array.shape[:2], channels, array.dtype, render, tile=128, levels=levels, mpp=mpp)


@pytest.fixture(scope="module")
def slide_pair(tmp_path_factory) -> tuple[dict[str, str], np.ndarray, np.ndarray]:
    folder = tmp_path_factory.mktemp("slides")
    image, label = _tissue(512, 768)
    return (
        {"image": str(_write(folder / "case.tif", image)), "label": str(_write(folder / "case_label.tif", label))},
        image,
        label,
    )


def _in_memory(image: np.ndarray, label: np.ndarray) -> dict:
    patch = HierarchicalPatchd(["image", "label"], LENGTH, PATCH, mode=["area", "fraction"], num_classes=[None, 3])
    return patch({"image": MetaTensor(np.moveaxis(image, -1, 0).copy()), "label": MetaTensor(label[None].copy())})


def test_slide_patch_equals_in_memory_patch(slide_pair):
    paths, image, label = slide_pair
    out = SlidePatchd(["image", "label"], LENGTH, PATCH, mode=["area", "fraction"], num_classes=[None, 3])(paths)
    ref = _in_memory(image, label)
    forest, info = forest_from_trace(out["image"])
    ref_forest, ref_info = forest_from_trace(ref["image"])
    assert forest == ref_forest and forest.spatial_shape == (512, 768)
    assert info["mode"] == ref_info["mode"] and info["serialize_mode"] == ref_info["serialize_mode"]
    for key in ("image", "label"):
        assert out[key].shape == ref[key].shape and out[key].dtype == ref[key].dtype
        assert torch.allclose(out[key].as_tensor(), ref[key].as_tensor(), atol=1e-4), key
    assert torch.equal(out["geom"], ref["geom"]) and torch.equal(out["token_mask"], ref["token_mask"])
    assert out["image"].meta["filename_or_obj"] == paths["image"]
    assert out["label"].meta["filename_or_obj"] == paths["label"]
    assert tuple(out["image"].meta["spatial_shape"]) == (512, 768)
    assert out["image"].meta["mpp"] == pytest.approx((0.5, 0.5))
    assert float(out["image"].affine[0, 0]) == pytest.approx(0.5e-3)  # mm per pixel
    assert paths["image"].endswith("case.tif")  # the caller's data is untouched


def test_invertd_restores_full_resolution(slide_pair):
    paths, _, label = slide_pair
    pre = Compose([SlidePatchd(["image", "label"], LENGTH, PATCH, mode=["area", "fraction"], num_classes=[None, 3])])
    data = pre(paths)
    data["pred"] = data["label"].clone()
    inverted = Invertd(keys="pred", transform=pre, orig_keys="label", nearest_interp=False)(data)
    forest, _ = forest_from_trace(data["label"])
    expected = deserialize(data["label"].as_tensor(), forest, mode="linear")
    assert tuple(inverted["pred"].shape) == (3, 512, 768)
    assert torch.allclose(inverted["pred"].as_tensor(), expected, atol=1e-5)
    dice = (
        2
        * ((inverted["pred"].argmax(0) == 1) & (torch.from_numpy(label) == 1)).sum()
        / ((inverted["pred"].argmax(0) == 1).sum() + (torch.from_numpy(label) == 1).sum())
    )
    assert dice > 0.9  # the depatching upper bound of a smooth label


def test_dataloader_workers_and_decollate(slide_pair):
    paths, _, _ = slide_pair
    transform = SlidePatchd(["image", "label"], LENGTH, PATCH, mode=["area", "nearest"])
    loader = DataLoader(Dataset([paths, paths], transform), batch_size=2, num_workers=2)
    batch = next(iter(loader))
    assert tuple(batch["image"].shape) == (2, 3, LENGTH, PATCH, PATCH)
    assert tuple(batch["geom"].shape) == (2, LENGTH, 4) and batch["token_mask"].dtype == torch.bool
    items = decollate_batch(batch)
    assert len(items) == 2
    forest, _ = forest_from_trace(items[1]["label"])
    assert isinstance(forest, Forest) and forest.spatial_shape == (512, 768)


def test_save_mask_and_full_resolution_dice(slide_pair, tmp_path):
    paths, _, label = slide_pair
    data = SlidePatchd(["image", "label"], LENGTH, PATCH, mode=["area", "fraction"], num_classes=[None, 3])(paths)
    forest, _ = forest_from_trace(data["image"])
    data["pred"] = torch.as_tensor(data["label"].as_tensor())  # a bare prediction: the forest comes from ref_key
    saved = SaveSlideMaskd("pred", tmp_path / "masks", ref_key="image")(data)
    mask_path = Path(saved["pred_path"])
    assert mask_path.name == "case_mask.tif" and mask_path.is_file()
    with open_slide(mask_path) as mask:
        assert mask.shape == (512, 768) and mask.num_channels == 1
        assert mask.mpp == pytest.approx((0.5, 0.5))
        level0 = mask.read(0, (0, 0), (512, 768))[0]
    expected = deserialize(data["pred"], forest, mode="linear", argmax=True)[0].numpy()
    assert np.array_equal(level0, expected)
    scored = SlideDiced("pred_path", label_key="label", num_classes=3)(saved)
    in_memory = [
        2 * ((level0 == c) & (label == c)).sum() / ((level0 == c).sum() + (label == c).sum()) for c in range(3)
    ]
    assert np.allclose(scored["pred_path_dice"].numpy(), in_memory, atol=1e-6)
    assert float(scored["pred_path_dice"][1]) > 0.9


def test_random_version_is_seeded_and_draws_parameters(slide_pair):
    paths, _, _ = slide_pair
    a = RandSlidePatchd("image", LENGTH, PATCH).set_random_state(seed=3)
    b = RandSlidePatchd("image", LENGTH, PATCH).set_random_state(seed=3)
    drawn = set()
    for _ in range(4):
        fa, fb = forest_from_trace(a(paths)["image"])[0], forest_from_trace(b(paths)["image"])[0]
        assert fa == fb
        drawn.add((a.drawn_spec.edges.kernel_size, a.drawn_spec.edges.thresholds))
    assert len(drawn) > 1


def test_edge_kind_reaches_the_slide_forest(slide_pair):
    """SlidePatchd / RandSlidePatchd build the forest from the edge kind they were given (soft by default)."""
    from monai_shf.slide import build_slide_forest

    paths, _, _ = slide_pair
    for kind in ("soft", "canny"):
        out = SlidePatchd("image", LENGTH, PATCH, edge_kind=kind)(paths)
        expected = build_slide_forest(paths["image"], LENGTH, patch_size=PATCH, edge_kind=kind)
        assert forest_from_trace(out["image"])[0] == expected
        rand = RandSlidePatchd("image", LENGTH, PATCH, kernel_sizes=(3,), low_range=(50, 51), edge_kind=kind)
        assert forest_from_trace(rand(paths)["image"])[0] == expected
    soft = forest_from_trace(SlidePatchd("image", LENGTH, PATCH)(paths)["image"])[0]
    assert soft == build_slide_forest(paths["image"], LENGTH, patch_size=PATCH)
    # the two kinds differ on this slide once the budget goes below the uniform 32-pixel grid
    options = {"patch_size": PATCH}
    assert build_slide_forest(paths["image"], 1500, **options) != build_slide_forest(
        paths["image"], 1500, edge_kind="canny", **options
    )
    with pytest.raises(ValueError, match="edge_kind"):
        SlidePatchd("image", LENGTH, PATCH, edge_kind="sobel")


def test_bad_input(slide_pair, tmp_path):
    paths, image, _ = slide_pair
    patch = SlidePatchd(["image", "label"], LENGTH, PATCH, mode=["area", "nearest"])
    for cls in (SlidePatchd, RandSlidePatchd):
        with pytest.raises(TypeError, match=f"{cls.__name__} takes no score_key"):
            cls("image", LENGTH, PATCH, score_key="score")
    with pytest.raises(ValueError, match="not found"):
        patch({"image": str(tmp_path / "missing.tif"), "label": paths["label"]})
    other = _write(tmp_path / "small_label.tif", np.zeros((256, 768), np.uint8))
    with pytest.raises(ValueError, match="same size"):
        patch({"image": paths["image"], "label": str(other)})
    with pytest.raises(TypeError, match="slide file path"):
        patch({"image": np.zeros((3, 8, 8)), "label": paths["label"]})
    tiny = _write(tmp_path / "tiny.tif", image[:4, :4])
    with pytest.raises(ValueError):
        SlidePatchd("image", 4, PATCH)({"image": str(tiny)})
    with pytest.raises(ValueError, match="num_classes"):
        SlidePatchd(["image", "label"], LENGTH, PATCH, mode=["area", "fraction"])


def test_slide_transforms_have_the_monai_aliases():
    from monai_shf.transforms import slide

    for name in ("SlidePatch", "RandSlidePatch", "SaveSlideMask", "SlideDice"):
        for alias in (f"{name}D", f"{name}Dict"):
            assert getattr(slide, alias) is getattr(slide, f"{name}d") and alias in slide.__all__, alias


def _patched(paths: dict[str, str]) -> dict:
    data = SlidePatchd(["image", "label"], LENGTH, PATCH, mode=["area", "fraction"], num_classes=[None, 3])(paths)
    data["pred"] = torch.as_tensor(data["label"].as_tensor())
    return data


def test_save_mask_never_overwrites_an_input(slide_pair, tmp_path):
    """output_postfix="" into the slide's folder would write the slide itself; the default postfix
    into a folder where the label slide is named ``<case>_mask.tif`` would write the label."""
    import shutil

    paths, _, _ = slide_pair
    folder = tmp_path / "data"
    folder.mkdir()
    local = {"image": str(folder / "case.tif"), "label": str(folder / "case_mask.tif")}
    shutil.copy(paths["image"], local["image"])
    shutil.copy(paths["label"], local["label"])
    before = {k: Path(v).read_bytes() for k, v in local.items()}
    data = _patched(local)
    with pytest.raises(ValueError, match="case.tif' is the input"):
        SaveSlideMaskd("pred", folder, output_postfix="")(data)
    with pytest.raises(ValueError, match="case_mask.tif' is the input"):
        SaveSlideMaskd("pred", folder)(data)
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / "case.tif").symlink_to(local["image"])
    with pytest.raises(ValueError, match="is the input"):  # a link to the slide in the output folder
        SaveSlideMaskd("pred", tmp_path / "link", output_postfix="")(data)
    assert {k: Path(v).read_bytes() for k, v in local.items()} == before
    assert sorted(p.name for p in folder.iterdir()) == ["case.tif", "case_mask.tif"]  # no temporary either


def test_save_mask_names_are_unique_per_slide(slide_pair, tmp_path):
    import shutil

    paths, _, _ = slide_pair
    for name in ("case.v1", "case.v2", "a/case", "b/case"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(paths["image"], tmp_path / f"{name}.tif")
    save = SaveSlideMaskd("pred", tmp_path / "masks")
    written = [
        Path(save(_patched({"image": str(tmp_path / f"{name}.tif"), "label": paths["label"]}))["pred_path"]).name
        for name in ("case.v1", "case.v2")
    ]
    assert written == ["case.v1_mask.tif", "case.v2_mask.tif"]
    first = _patched({"image": str(tmp_path / "a/case.tif"), "label": paths["label"]})
    assert Path(save(first)["pred_path"]).name == "case_mask.tif"
    save(first)  # the same slide again (the next validation round) replaces its own mask
    with pytest.raises(ValueError, match="case_mask.tif' for slide .*b/case.tif.*the mask it wrote for .*a/case.tif"):
        save(_patched({"image": str(tmp_path / "b/case.tif"), "label": paths["label"]}))
