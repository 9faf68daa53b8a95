"""Tests of monai_shf.data.synthetic_slides: generated pyramidal slides from real tissue texture."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile

from monai_shf.cli import main
from monai_shf.data import make_slide
from monai_shf.data import synthetic_slides as synthetic_module
from monai_shf.slide.classes import read_class_record
from monai_shf.slide.writer import level_sample_index

HAS_IHC = synthetic_module.find_ihc2d() is not None


def _levels(path) -> list[np.ndarray]:
    with tifffile.TiffFile(path) as tif:
        return [level.asarray() for level in tif.series[0].levels]


@pytest.fixture(scope="module")
def slide_pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slides")
    return make_slide(folder / "s.tif", (1536, 1280), tile=256, seed=3, mpp=0.5)


def test_slide_layout(slide_pair):
    slide, label = slide_pair
    assert label == slide.with_name("s_label.tif")
    for path, channels, compression in ((slide, 3, tifffile.COMPRESSION.JPEG), (label, 1, "deflate")):
        with tifffile.TiffFile(path) as tif:
            levels = tif.series[0].levels
            assert [lv.shape[:2] for lv in levels] == [(1536, 1280), (768, 640), (384, 320), (192, 160)]
            assert (levels[0].shape[2] if channels == 3 else 1) == channels
            page = tif.pages[0]
            assert page.is_tiled and page.tilewidth == 256
            if compression == "deflate":
                assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
            else:
                assert page.compression == compression
            x_res = page.tags["XResolution"].value
            assert x_res[0] / x_res[1] == pytest.approx(1e4 / 0.5)  # pixels per cm at 0.5 um/px


def test_label_records_its_class_names(slide_pair):
    slide, label = slide_pair
    assert read_class_record(label) == {v: (name, None) for v, name in enumerate(synthetic_module.SLIDE_CLASSES)}
    assert read_class_record(slide) is None  # the RGB slide holds no labels


def test_label_agrees_with_the_image(slide_pair):
    slide, label = slide_pair
    image, classes = _levels(slide)[0].astype(np.float32), _levels(label)[0]
    assert set(np.unique(classes)) == {0, 1, 2}
    for cls in range(3):  # every class takes a real share of the slide
        assert (classes == cls).mean() > 0.05
    brightness = image.mean(-1)
    # glass/lumen is bright, DAB-positive epithelium is brown (blue channel absorbed most)
    assert brightness[classes == 0].mean() > brightness[classes == 1].mean() + 30
    brownness = image[..., 0] - image[..., 2]
    assert brownness[classes == 2].mean() > brownness[classes == 1].mean() + 15
    if HAS_IHC:  # the texture is the real IHC image: its pixels occur verbatim in level 0 (JPEG aside)
        assert "ihc.png" in tifffile.TiffFile(slide).pages[0].description


def test_label_levels_are_decimations(slide_pair):
    _, label = slide_pair
    levels = _levels(label)
    for k, level in enumerate(levels[1:], start=1):
        rows, cols = level_sample_index(0, level.shape[0], k, 1536), level_sample_index(0, level.shape[1], k, 1280)
        expected = levels[0][np.ix_(rows, cols)]
        # texture classes are exact decimations; the low-frequency tissue/variant fields are evaluated
        # per level, so island borders may move by a pixel or two of that level
        assert (level == expected).mean() > 0.95


def test_deterministic_in_seed(tmp_path, slide_pair):
    again, again_label = make_slide(tmp_path / "a.tif", (1536, 1280), tile=256, seed=3, mpp=0.5)
    other, _ = make_slide(tmp_path / "b.tif", (1536, 1280), tile=256, seed=4, mpp=0.5, label_out=False)
    np.testing.assert_array_equal(_levels(again)[0], _levels(slide_pair[0])[0])
    np.testing.assert_array_equal(_levels(again_label)[0], _levels(slide_pair[1])[0])
    assert (_levels(other)[0] != _levels(again)[0]).any(axis=-1).mean() > 0.3
    assert sorted(os.listdir(tmp_path)) == ["a.tif", "a_label.tif", "b.tif"]


def test_not_a_plain_repeat(slide_pair):
    image = _levels(slide_pair[0])[0].astype(np.int16)
    # mirror tiling has period 1024: a rotated variant, islands and stain variation break it
    assert np.abs(image[:512, :256] - image[1024:1536, :256]).mean() > 10


def test_fallback_without_real_data(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic_module, "find_ihc2d", lambda: None)
    with pytest.warns(UserWarning, match="ihc2d"):
        slide, label = make_slide(tmp_path / "g.tif", 512, tile=256, seed=0)
    assert _levels(slide)[0].shape == (512, 512, 3)
    assert _levels(label)[0].max() <= 2


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        make_slide(tmp_path / "missing" / "s.tif", 512)
    with pytest.raises(ValueError, match="does not exist"):
        make_slide(tmp_path / "s.tif", 512, label_out=tmp_path / "missing" / "l.tif")
    with pytest.raises(ValueError, match="size"):
        make_slide(tmp_path / "s.tif", (512, 512, 3))
    with pytest.raises(ValueError, match="size"):
        make_slide(tmp_path / "s.tif", 0)
    assert os.listdir(tmp_path) == []


def test_cli_make_slide(tmp_path, capsys):
    assert main(["make-slide", str(tmp_path / "c.tif"), "--size", "600", "520", "--tile", "256", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "c_label.tif" in out and "peak memory" in out
    assert _levels(tmp_path / "c.tif")[0].shape == (600, 520, 3)
    assert _levels(tmp_path / "c_label.tif")[0].shape == (600, 520)


def test_label_out_is_never_the_slide(tmp_path):
    out = tmp_path / "s.tif"
    with pytest.raises(ValueError, match="label_out .*s.tif' is the input"):
        make_slide(out, 256, tile=256, label_out=out)
    with pytest.raises(ValueError, match="label_out .*s.tif' is the input"):
        make_slide(out, 256, tile=256, label_out=tmp_path / "." / "s.tif")
    assert list(tmp_path.iterdir()) == []
