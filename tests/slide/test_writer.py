"""Tests of monai_shf.slide.writer: the tile-streaming pyramid writer and the depatched mask."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import torch

from monai_shf.forest import Forest, build_forest, deserialize
from monai_shf.slide import level_sample_index, pyramid_shapes, write_pyramid, write_slide_mask
from monai_shf.slide.classes import read_class_record


def _gradient(level: int, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[y0 : y0 + h, x0 : x0 + w]
    return np.stack([(yy + 7 * level) % 251, (xx * 3) % 256, (yy + xx) % 199], -1).astype(np.uint8)


def _levels(path) -> list[np.ndarray]:
    with tifffile.TiffFile(path) as tif:
        return [level.asarray() for level in tif.series[0].levels]


def test_pyramid_shapes_ceil_halving_down_to_one_tile():
    assert pyramid_shapes((1100, 700), 256) == [(1100, 700), (550, 350), (275, 175), (138, 88)]
    assert pyramid_shapes((100, 60), 256) == [(100, 60)]
    assert pyramid_shapes((1100, 700), 256, levels=2) == [(1100, 700), (550, 350)]
    assert pyramid_shapes((3, 2), 256, levels=9) == [(3, 2), (2, 1), (1, 1)]


def test_write_pyramid_layout_and_values(tmp_path):
    path = write_pyramid(tmp_path / "a.tif", (1100, 700), 3, np.uint8, _gradient, tile=256, mpp=(0.25, 0.5))
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff
        pages = list(tif.pages)
        assert [p.shape[:2] for p in pages] == pyramid_shapes((1100, 700), 256)
        assert [p.subfiletype for p in pages] == [0, 1, 1, 1]  # flat chain, reduced-resolution levels
        assert all(p.is_tiled and (p.tilelength, p.tilewidth) == (256, 256) for p in pages)
        assert pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert pages[0].predictor == tifffile.PREDICTOR.HORIZONTAL
        assert pages[0].tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
        x_res, y_res = pages[2].tags["XResolution"].value, pages[2].tags["YResolution"].value
        assert x_res[0] / x_res[1] == pytest.approx(1e4 / (0.5 * 4))  # level 2: mpp * 4
        assert y_res[0] / y_res[1] == pytest.approx(1e4 / (0.25 * 4))
        assert len(tif.series[0].levels) == 4
    for level, array in enumerate(_levels(path)):
        np.testing.assert_array_equal(array, _gradient(level, 0, 0, *array.shape[:2]))


def test_write_pyramid_jpeg_rgb_is_close(tmp_path):
    path = write_pyramid(tmp_path / "j.tif", (600, 520), 3, np.uint8, _gradient, tile=256, compression="jpeg")
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.JPEG
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.YCBCR
        image = tif.pages[0].asarray()
    assert np.abs(image.astype(int) - _gradient(0, 0, 0, 600, 520)).mean() < 6


def test_constant_tiles_are_encoded_once(tmp_path, monkeypatch):
    import imagecodecs

    calls = []
    original = imagecodecs.deflate_encode
    monkeypatch.setattr(imagecodecs, "deflate_encode", lambda *a, **k: calls.append(1) or original(*a, **k))
    seen = []

    def render(level, y0, x0, h, w):
        seen.append((level, y0, x0))
        if (y0 // 128 + x0 // 128) % 2:
            return np.uint8(3)  # a constant tile, announced
        return np.full((h, w), 5, np.uint8)  # a constant tile as an array

    path = write_pyramid(tmp_path / "c.tif", (1024, 1024), 1, np.uint8, render, tile=128, levels=2)
    assert len(seen) == 64 + 16 == len(set(seen))  # every tile rendered exactly once
    assert len(calls) == 2  # one encoding per distinct value
    level0 = _levels(path)[0]
    assert level0[0, 0] == 5 and level0[0, 128] == 3 and level0[128, 128] == 5


def test_render_error_leaves_no_file(tmp_path):
    def render(level, y0, x0, h, w):
        if level == 1 and y0 > 0:
            raise RuntimeError("boom")
        return np.zeros((h, w), np.uint8)

    with pytest.raises(RuntimeError, match="boom"):
        write_pyramid(tmp_path / "x.tif", (2048, 1024), 1, np.uint8, render, tile=256)
    assert os.listdir(tmp_path) == []


def test_existing_file_kept_on_error(tmp_path):
    target = tmp_path / "x.tif"
    target.write_bytes(b"old")

    def render(level, y0, x0, h, w):
        raise ValueError("bad tile")

    with pytest.raises(ValueError, match="bad tile"):
        write_pyramid(target, (300, 300), 1, np.uint8, render, tile=256)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["x.tif"]


def test_write_pyramid_bad_input(tmp_path):
    ok = lambda level, y0, x0, h, w: np.zeros((h, w), np.uint8)  # noqa: E731
    with pytest.raises(ValueError, match="missing"):
        write_pyramid(tmp_path / "missing" / "a.tif", (64, 64), 1, np.uint8, ok)
    with pytest.raises(ValueError, match="multiple of 16"):
        write_pyramid(tmp_path / "a.tif", (64, 64), 1, np.uint8, ok, tile=100)
    with pytest.raises(ValueError, match="jpeg"):
        write_pyramid(tmp_path / "a.tif", (64, 64), 1, np.uint16, ok, compression="jpeg")
    with pytest.raises(TypeError, match="render"):
        write_pyramid(tmp_path / "a.tif", (64, 64), 1, np.uint8, None)
    with pytest.raises(ValueError, match="mpp"):
        write_pyramid(tmp_path / "a.tif", (64, 64), 1, np.uint8, ok, mpp=-1)
    with pytest.raises(ValueError, match="tile of shape"):
        write_pyramid(tmp_path / "a.tif", (64, 64), 3, np.uint8, ok)
    with pytest.raises(TypeError, match="dtype"):
        write_pyramid(tmp_path / "a.tif", (64, 64), 1, np.uint16, ok)
    assert os.listdir(tmp_path) == []


@pytest.fixture(scope="module")
def slide_forest() -> Forest:
    """A forest over a 1000 x 1300 'slide' (non-power-of-two, edges clustered) with varied leaf sizes."""
    rng = np.random.default_rng(3)
    score = np.zeros((1000, 1300), np.float32)
    score[rng.integers(0, 400, 300), rng.integers(0, 500, 300)] = 1
    forest = build_forest(score, 400, min_size=2, criterion="edges")  # the paper's order: leaves down to min_size
    assert forest.sizes.min() <= 4 and forest.sizes.max() >= 64
    return forest


def _scores(forest: Forest, dtype, rng, classes: int = 3) -> np.ndarray:
    pred = rng.standard_normal((classes, forest.length, 8, 8)).astype(dtype)
    pred[0, : forest.length // 2] += 10  # half the leaves confidently class 0: the constant shortcut
    return pred


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mask_level0_equals_in_memory_depatch(tmp_path, slide_forest, rng, dtype):
    pred = _scores(slide_forest, dtype, rng)
    before = pred.copy()
    path = write_slide_mask(tmp_path / "m.tif", slide_forest, pred, tile=256)
    np.testing.assert_array_equal(pred, before)  # input untouched
    expected = deserialize(pred, slide_forest, mode="linear", argmax=True)[0]
    assert (expected == deserialize(pred, slide_forest, mode="linear").argmax(0)).all()
    assert (slide_forest.sizes < 8).any() and (slide_forest.sizes > 8).any()  # area adjoint and interpolation
    levels = _levels(path)
    assert levels[0].dtype == np.uint8 and levels[0].shape == (1000, 1300)
    mismatch = int((levels[0] != expected).sum())
    # float64: bit-identical argmax; float32: matrix products in another order may flip exact near-ties
    assert mismatch == 0 if dtype == np.float64 else mismatch <= 2
    for k, level in enumerate(levels):  # reduced levels: exact decimations of level 0
        rows, cols = level_sample_index(0, level.shape[0], k, 1000), level_sample_index(0, level.shape[1], k, 1300)
        np.testing.assert_array_equal(level, levels[0][np.ix_(rows, cols)])


def test_mask_labels_and_probabilities(tmp_path, slide_forest, rng):
    labels = rng.integers(0, 4, (1, slide_forest.length, 8, 8))
    labels[:, :100] = 2
    path = write_slide_mask(tmp_path / "l.tif", slide_forest, torch.as_tensor(labels), tile=256)
    np.testing.assert_array_equal(_levels(path)[0], deserialize(labels, slide_forest, mode="nearest")[0])

    probs = rng.random((2, slide_forest.length, 8, 8)).astype(np.float32)
    path = write_slide_mask(tmp_path / "p.tif", slide_forest, probs, tile=256, probabilities=True)
    written = _levels(path)[0]
    assert written.shape == (1000, 1300, 2)
    expected = np.rint(deserialize(probs, slide_forest, mode="linear") * 255).transpose(1, 2, 0)
    assert np.abs(written.astype(int) - expected).max() <= 1


def test_mask_opens_in_tifffile_monai_and_openslide(tmp_path, slide_forest, rng):
    pred = _scores(slide_forest, np.float32, rng)
    like = SimpleNamespace(shape=(1000, 1300), mpp=(0.25, 0.25))
    path = write_slide_mask(tmp_path / "m.tif", slide_forest, pred, like=like, tile=256)
    expected = deserialize(pred, slide_forest, mode="linear").argmax(0)
    centres = slide_forest.starts + slide_forest.sizes // 2

    from monai.data import WSIReader

    reader = WSIReader(backend="tifffile", mode="L")  # one-channel mask: no RGB check
    wsi = reader.read(str(path))
    assert reader.get_level_count(wsi) == 4
    assert reader.get_size(wsi, 0) == (1000, 1300)
    assert reader.get_mpp(wsi, 0) == pytest.approx((0.25, 0.25))
    assert reader.get_mpp(wsi, 1) == pytest.approx((0.5, 0.5))
    patch, _ = reader.get_data(wsi, location=(0, 0), size=(1000, 1300), level=0)
    np.testing.assert_array_equal(np.asarray(patch)[0][tuple(centres.T)], expected[tuple(centres.T)])

    openslide = pytest.importorskip("openslide", reason="openslide-python/openslide-bin not installed")
    with openslide.OpenSlide(str(path)) as osr:
        assert osr.level_count == 4
        assert osr.dimensions == (1300, 1000)  # (width, height)
        assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(0.25)
        region = np.asarray(osr.read_region((0, 0), 0, (1300, 1000)))[..., 0]  # grey replicated in RGB
    np.testing.assert_array_equal(region[tuple(centres.T)], expected[tuple(centres.T)])


def test_mask_records_class_names(tmp_path, slide_forest, rng):
    pred = _scores(slide_forest, np.float32, rng)
    path = write_slide_mask(tmp_path / "m.tif", slide_forest, pred, tile=256, classes=["bg", "tumour", "stroma"])
    assert read_class_record(path) == {0: ("bg", None), 1: ("tumour", None), 2: ("stroma", None)}
    assert read_class_record(write_slide_mask(tmp_path / "n.tif", slide_forest, pred, tile=256)) is None
    with pytest.raises(ValueError, match="probabilities"):
        write_slide_mask(tmp_path / "p.tif", slide_forest, pred, probabilities=True, classes=["a", "b", "c"])
    with pytest.raises(TypeError, match="classes must map"):
        write_slide_mask(tmp_path / "p.tif", slide_forest, pred, classes="tumour")


def test_mask_bad_input(tmp_path, slide_forest, rng):
    pred = _scores(slide_forest, np.float32, rng)
    with pytest.raises(ValueError, match="does not exist"):
        write_slide_mask(tmp_path / "no" / "m.tif", slide_forest, pred)
    with pytest.raises(ValueError, match="pred must be"):
        write_slide_mask(tmp_path / "m.tif", slide_forest, pred[:, :10])
    with pytest.raises(ValueError, match="level-0 shape"):
        write_slide_mask(tmp_path / "m.tif", slide_forest, pred, like=SimpleNamespace(shape=(1000, 1301), mpp=None))
    with pytest.raises(ValueError, match="K >= 2"):
        write_slide_mask(tmp_path / "m.tif", slide_forest, pred[:1])
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        write_slide_mask(tmp_path / "m.tif", slide_forest, np.full((1, slide_forest.length, 8, 8), 300))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        write_slide_mask(tmp_path / "m.tif", slide_forest, pred, probabilities=True)
    nan = pred.copy()
    nan[1, 3, 2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_slide_mask(tmp_path / "m.tif", slide_forest, nan)
    with pytest.raises(TypeError, match="Forest"):
        write_slide_mask(tmp_path / "m.tif", "forest", pred)
    assert os.listdir(tmp_path) == []


def test_mask_like_slide_copies_geometry(tmp_path, slide_forest, rng):
    from monai_shf.slide import open_slide

    source = write_pyramid(tmp_path / "src.tif", (1000, 1300), 3, np.uint8, _gradient, tile=256, mpp=(0.3, 0.4))
    pred = _scores(slide_forest, np.float32, rng)
    with open_slide(source) as slide:
        by_object = write_slide_mask(tmp_path / "a.tif", slide_forest, pred, like=slide, tile=256)
    by_path = write_slide_mask(tmp_path / "b.tif", slide_forest, pred, like=source, tile=256)
    for path in (by_object, by_path):
        with open_slide(path) as mask:
            assert mask.shape == (1000, 1300) and mask.num_channels == 1
            assert mask.mpp == pytest.approx((0.3, 0.4))
            assert len(mask.level_shapes) == 4


def test_mask_never_overwrites_its_slide(tmp_path, slide_forest, rng):
    """write_slide_mask(path=slide, like=slide), or a link to it: refused before anything is written."""
    slide = write_pyramid(
        tmp_path / "slide.tif", slide_forest.spatial_shape, 1, np.uint8, lambda *a: np.uint8(7), tile=256
    )
    before = slide.read_bytes()
    (tmp_path / "link.tif").symlink_to(slide)
    os.link(slide, tmp_path / "hard.tif")
    pred = _scores(slide_forest, np.float32, rng)
    for out in ("slide.tif", "link.tif", "hard.tif"):
        for like in (slide, str(slide)):
            with pytest.raises(ValueError, match=f"path .*{out}' is the input .*slide.tif"):
                write_slide_mask(tmp_path / out, slide_forest, pred, like=like, tile=256)
    assert slide.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard.tif", "link.tif", "slide.tif"]
