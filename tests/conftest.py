"""Shared fixtures: real data from ../shared/data (skipped with a reason where absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# the library finds real data only through $MONAI_SHF_DATA (or an explicit root); the tests point it at
# the shared/ folder beside the repository unless the caller set it
if DATA.is_dir():
    os.environ.setdefault("MONAI_SHF_DATA", str(DATA))


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (the shared/ folder beside the repository)")
    return path


@pytest.fixture(scope="session")
def nuclei2d() -> tuple[np.ndarray, np.ndarray]:
    """(image uint16 (512, 512), instance mask uint16 (512, 512)) of the 2018 DSB nuclei sample."""
    import tifffile

    folder = _need(DATA / "nuclei2d")
    return tifffile.imread(folder / "img2d.tif"), tifffile.imread(folder / "mask2d.tif")


@pytest.fixture(scope="session")
def mni152_dir() -> Path:
    return _need(DATA / "mni152")


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


CT_SERIES_SHAPE = (64, 56, 40)
"""(columns, rows, slices) of the :func:`ct_series` fixture."""
CT_SERIES_SPACING = (2.5, 2.0, 3.0)
"""(column spacing, row spacing, slice spacing) in mm of the :func:`ct_series` fixture."""


def write_ct_series(volume_ras: np.ndarray, folder: Path, seed: int = 0, **overrides) -> list[Path]:
    """Write ``volume_ras`` (float HU, (x, y, z) with x to the patient's right... as RAS voxel axes:
    ``volume_ras[i, j, k]`` at RAS (-i, -j, k) * spacing, i.e. LPS (i, j, k) * spacing plus an origin)
    as an axial CT series, one file per slice: int16 stored values, RescaleSlope 1 / RescaleIntercept
    -1024, ImageOrientationPatient (1, 0, 0, 0, 1, 0), PixelSpacing (row, column) = (2.0, 2.5) mm,
    SliceThickness = SpacingBetweenSlices = 3.0 mm. Files are written in a shuffled order under random
    names and InstanceNumber runs against the slice position, so a reader must sort by geometry.
    ``overrides`` set attributes on every dataset (e.g. ``Modality="MR"``). Returns the file paths in
    slice (position) order.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    cs, rs, ss = CT_SERIES_SPACING
    ncol, nrow, nsl = volume_ras.shape
    origin = np.array([-80.0, -70.0, -60.0])
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    rng = np.random.default_rng(seed)
    names = rng.permutation(nsl)
    stored = np.clip(np.rint(volume_ras + 1024.0), -32768, 32767).astype(np.int16)
    paths = []
    for k in range(nsl):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"IM{names[k]:04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "MNI^152", "MNI152", "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName = "20260101", "120000", "1", ""
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, nsl - k
        ds.Modality, ds.Manufacturer, ds.PositionReferenceIndicator = "CT", "monai_shf tests", ""
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.ImagePositionPatient = [float(v) for v in origin + np.array([0.0, 0.0, k * ss])]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [rs, cs]
        ds.SliceThickness, ds.SpacingBetweenSlices = ss, ss
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = nrow, ncol
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024.0, 1.0, "HU"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()  # frame[row, col] = volume[col, row]
        for key, value in overrides.items():
            setattr(ds, key, value)
        dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def ct_volume(mni152_dir) -> np.ndarray:
    """A CT-like float32 HU volume (64, 56, 40) from the MNI152 T1 head (cropped, every third voxel):
    air -1000 HU, brain and skull 0..~100 HU."""
    import nibabel as nib

    t1 = np.asarray(nib.load(mni152_dir / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz").dataobj)
    t1 = t1[2:194:3, 30:198:3, 40:160:3].astype(np.float32)  # (64, 56, 40)
    return np.where(t1 < 5, -1000.0, t1 * (100.0 / max(float(t1.max()), 1.0))).astype(np.float32)


@pytest.fixture(scope="session")
def ct_series(ct_volume, tmp_path_factory) -> Path:
    """A folder holding one axial CT series written from :func:`ct_volume` (see :func:`write_ct_series`);
    session-scoped: tests that change files copy the folder first."""
    folder = tmp_path_factory.mktemp("ct") / "series"
    write_ct_series(ct_volume, folder)
    return folder


@pytest.fixture(scope="session")
def write_series():
    """:func:`write_ct_series` (as a fixture: the tests' packages have conftest modules of their own)."""
    return write_ct_series
