"""DICOM series found and checked from headers: one series per folder, regular slice grid."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest

from monai_shf.data.dicom_series import find_series, read_series


@pytest.fixture()
def small(ct_volume):
    return ct_volume[:16, :12, :6]


def test_read_series_sorts_by_position_not_by_name_or_instance_number(ct_series):
    series = read_series(ct_series)
    assert series.shape == (64, 56, 40)
    assert series.spacing == pytest.approx((2.5, 2.0, 3.0))
    assert series.modality == "CT"
    z = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in series.files]
    assert np.all(np.diff(z) > 0)
    # the fixture's names and instance numbers run in other orders, so sorting by either would fail here
    assert [f.name for f in series.files] != sorted(f.name for f in series.files)


def test_mixed_series_in_one_folder_is_refused(small, tmp_path, write_series):
    write_series(small, tmp_path / "a", seed=1)
    write_series(small, tmp_path / "b", seed=2)
    for f in (tmp_path / "b").iterdir():
        shutil.copy(f, tmp_path / "a" / f"b_{f.name}")
    with pytest.raises(ValueError, match=r"mixes 2 DICOM series.*own folder") as e:
        read_series(tmp_path / "a")
    assert str(tmp_path / "a") in str(e.value)


def test_missing_slice_is_reported_with_its_neighbours(small, tmp_path, write_series):
    paths = write_series(small, tmp_path / "s")
    paths[3].unlink()
    with pytest.raises(ValueError, match=r"missing slices: 1 missing between .*" + paths[2].name):
        read_series(tmp_path / "s")


def test_inconsistent_slice_spacing_is_reported(small, tmp_path, write_series):
    paths = write_series(small, tmp_path / "s")
    ds = pydicom.dcmread(paths[-1])
    ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], float(ds.ImagePositionPatient[2]) + 1.3]
    ds.save_as(paths[-1])
    with pytest.raises(ValueError, match=r"inconsistent slice spacing.*" + paths[-1].name):
        read_series(tmp_path / "s")


def test_inconsistent_pixel_spacing_is_reported(small, tmp_path, write_series):
    paths = write_series(small, tmp_path / "s")
    ds = pydicom.dcmread(paths[2])
    ds.PixelSpacing = [1.0, 1.0]
    ds.save_as(paths[2])
    with pytest.raises(ValueError, match=r"inconsistent PixelSpacing.*" + paths[2].name):
        read_series(tmp_path / "s")


def test_non_image_modality_is_refused_and_skipped_by_find_series(small, tmp_path, write_series):
    write_series(small, tmp_path / "root" / "ct")
    write_series(small, tmp_path / "root" / "seg", Modality="SEG")
    (tmp_path / "root" / "notes.txt").write_text("not DICOM")
    with pytest.raises(ValueError, match=r"DICOM SEG object .*not an image series"):
        read_series(tmp_path / "root" / "seg")
    found, skipped = find_series(tmp_path / "root")
    assert [s.folder.name for s in found] == ["ct"]
    assert [p.name for p in skipped] == ["seg"]


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        read_series(tmp_path / "nope")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="no DICOM file"):
        read_series(tmp_path / "e")
    with pytest.raises(ValueError, match="no DICOM image series"):
        find_series(tmp_path / "e")
