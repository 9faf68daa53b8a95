"""Tests of monai_shf.data.volumes: generated OME-Zarr volumes from the real MNI152 anatomy."""

from __future__ import annotations

import numpy as np
import pytest

from monai_shf.cli import main
from monai_shf.data import VOLUME_CLASSES, make_volume
from monai_shf.data.volumes import brain_tile
from monai_shf.volume import open_volume


@pytest.fixture(scope="module")
def pair(mni152_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("vol")
    return make_volume(folder / "b.zarr", (80, 96, 64), tile=48, chunk=16, root=mni152_dir.parent)


def test_layout_and_levels(pair):
    image, label = pair
    assert label == image.with_name("b_label.zarr")
    v, lab = open_volume(image), open_volume(label)
    assert v.shape == lab.shape == (80, 96, 64)
    assert v.level_shapes == ((80, 96, 64), (40, 48, 32), (20, 24, 16))  # down to a side <= 32
    assert v.dtype == np.uint16 and lab.dtype == np.uint8
    assert v.unit == "millimeter" and v.spacing == pytest.approx((233 / 48,) * 3)
    assert v.chunk_shape(0) == (16, 16, 16)


def test_mirrored_tiles_of_the_scaled_brain(pair, mni152_dir):
    image, label = pair
    tile_image, tile_label = brain_tile(48, mni152_dir.parent)
    d, h, w = tile_image.shape
    x = open_volume(image).read(0, (0, 0, 0), (80, 96, 64))[0]
    y = open_volume(label).read(0, (0, 0, 0), (80, 96, 64))[0]
    np.testing.assert_array_equal(x[:d, :h, :w], tile_image)
    np.testing.assert_array_equal(y[:d, :h, :w], tile_label)
    # the next copy along z is the mirror image: no jump at the seam
    np.testing.assert_array_equal(x[d : 2 * d, :h, :w], tile_image[::-1][: 80 - d])
    assert set(np.unique(y).tolist()) == set(range(len(VOLUME_CLASSES)))
    # the label follows the anatomy: white matter is brighter than grey matter in T1
    assert x[y == 2].mean() > x[y == 1].mean() > x[y == 0].mean()


def test_label_pyramid_is_nearest(pair):
    _, label = pair
    lab = open_volume(label)
    level0 = lab.read(0, (0, 0, 0), lab.shape)[0]
    np.testing.assert_array_equal(lab.read(1, (0, 0, 0), lab.level_shapes[1])[0], level0[::2, ::2, ::2])


def test_cli_make_volume(mni152_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MONAI_SHF_DATA", str(mni152_dir.parent))
    assert main(["make-volume", str(tmp_path / "c.zarr"), "--size", "40", "--tile", "32", "--no-label"]) == 0
    assert "volume" in capsys.readouterr().out
    assert open_volume(tmp_path / "c.zarr").shape == (40, 40, 40)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.zarr"]
    assert main(["make-volume", str(tmp_path / "no" / "c.zarr"), "--size", "40"]) == 2


def test_bad_arguments(tmp_path, mni152_dir, monkeypatch):
    with pytest.raises(ValueError, match="size"):
        make_volume(tmp_path / "a.zarr", (8, 8), root=mni152_dir.parent)
    with pytest.raises(ValueError, match="label_out"):
        make_volume(tmp_path / "a.zarr", 8, label_out=tmp_path / "a.zarr", root=mni152_dir.parent)
    with pytest.raises(ValueError, match="lacks"):
        make_volume(tmp_path / "a.zarr", 8, root=tmp_path)  # an explicit root without the template
    monkeypatch.delenv("MONAI_SHF_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="MONAI_SHF_DATA"):
        make_volume(tmp_path / "a.zarr", 8)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_label_write_leaves_nothing(tmp_path, mni152_dir, monkeypatch):
    from monai_shf import volume

    real = volume.write_multiscale

    def failing(out, *args, **kwargs):
        if "label" in str(out):
            raise OSError("disk full")
        return real(out, *args, **kwargs)

    monkeypatch.setattr(volume, "write_multiscale", failing)
    with pytest.raises(OSError, match="disk full"):
        make_volume(tmp_path / "a.zarr", 16, tile=16, chunk=8, root=mni152_dir.parent)
    assert list(tmp_path.iterdir()) == []
