"""DICOM series from headers only: find the series in a folder tree and check their geometry.

MONAI's ``LoadImage`` (its ITK reader, GDCM underneath) reads a DICOM series given its folder, one
series per folder. Before a run reads any pixel, :func:`read_series` checks what that reader would
silently get wrong: a folder that mixes series, a non-image object (SEG, RTSTRUCT, SR, ...), slices
that differ in orientation, pixel spacing or size, missing slices and uneven slice spacing. Only
headers are read (``pydicom.dcmread(..., stop_before_pixels=True)``: milliseconds per file).

Needs the ``dicom`` extra (``pip install monai_shf[dicom]``); pydicom is imported on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["NON_IMAGE_MODALITIES", "DicomSeries", "read_series", "find_series"]

NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "RTPLAN", "RTRECORD", "SR", "PR", "KO", "REG", "DOC", "PLAN"})
"""Modalities that are not pixel images on a patient grid (they are skipped by :func:`find_series`)."""

_TOL_MM = 1e-3  # geometry tolerance: a thousandth of a millimetre (DS values carry 16 characters)


def _pydicom():
    try:
        import pydicom
    except ImportError as e:  # pragma: no cover - the extra is part of the test install
        raise ImportError("DICOM input needs pydicom: pip install monai_shf[dicom]") from e
    return pydicom


@dataclass(frozen=True)
class DicomSeries:
    """One image series, its files sorted along the slice normal (the order of the volume's third axis).

    Attributes:
        folder: the folder holding the series (what ``LoadImage`` is given).
        series_uid: SeriesInstanceUID.
        modality: Modality (e.g. ``"CT"``).
        files: one file per slice, sorted by position along the slice normal (ascending).
        shape: ``(columns, rows, slices)``: the spatial shape MONAI's ITK reader returns.
        spacing: ``(column spacing, row spacing, slice spacing)`` in mm.
    """

    folder: Path
    series_uid: str
    modality: str
    files: tuple[Path, ...]
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]


def _dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly in ``folder`` (by their ``DICM`` preamble; other files are ignored)."""
    is_dicom = _pydicom().misc.is_dicom
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_dicom(p))


def _headers(folder: Path) -> dict[str, list[tuple[Path, object]]]:
    """``{SeriesInstanceUID: [(file, header dataset), ...]}`` of the DICOM files in ``folder``."""
    pydicom = _pydicom()
    series: dict[str, list[tuple[Path, object]]] = {}
    for path in _dicom_files(folder):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as e:
            raise ValueError(f"cannot read DICOM header of {path}: {type(e).__name__}: {e}") from None
        uid = str(ds.get("SeriesInstanceUID", ""))
        if not uid:
            raise ValueError(f"DICOM file {path} has no SeriesInstanceUID.")
        series.setdefault(uid, []).append((path, ds))
    return series


def _check_geometry(folder: Path, uid: str, modality: str, items: list[tuple[Path, object]]) -> DicomSeries:
    """Sort the slices of one image series by position and check they form a regular grid."""
    first_path, first = items[0]
    for key in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "Rows", "Columns"):
        for path, ds in items:
            if key not in ds:
                raise ValueError(f"DICOM file {path} ({modality}) has no {key}: not an image on a patient grid.")
    iop = np.asarray(first.ImageOrientationPatient, dtype=float)
    spacing = np.asarray(first.PixelSpacing, dtype=float)  # (row spacing, column spacing)
    size = (int(first.Rows), int(first.Columns))
    for path, ds in items[1:]:
        if not np.allclose(np.asarray(ds.ImageOrientationPatient, dtype=float), iop, atol=1e-4):
            raise ValueError(f"DICOM series in {folder}: {path} has another ImageOrientationPatient than {first_path}.")
        if not np.allclose(np.asarray(ds.PixelSpacing, dtype=float), spacing, atol=_TOL_MM):
            raise ValueError(
                f"DICOM series in {folder} has inconsistent PixelSpacing: {path} has {list(ds.PixelSpacing)}, "
                f"{first_path} {list(first.PixelSpacing)}."
            )
        if (int(ds.Rows), int(ds.Columns)) != size:
            raise ValueError(f"DICOM series in {folder}: {path} is {ds.Rows}x{ds.Columns}, {first_path} {size}.")
    normal = np.cross(iop[:3], iop[3:])
    pos = np.array([np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float)) for _, ds in items])
    order = np.argsort(pos, kind="stable")
    items = [items[i] for i in order]
    pos = pos[order]
    step = 0.0
    if len(items) > 1:
        gaps = np.diff(pos)
        if np.any(gaps < _TOL_MM):
            i = int(np.argmin(gaps))
            raise ValueError(f"DICOM series in {folder}: {items[i][0]} and {items[i + 1][0]} lie at the same position.")
        step = float(gaps.min())
        if not np.allclose(gaps, step, atol=max(_TOL_MM, 1e-3 * step)):
            i = int(np.argmax(np.abs(gaps - step)))
            ratio = gaps[i] / step
            if abs(ratio - round(ratio)) < 1e-2:
                raise ValueError(
                    f"DICOM series in {folder} has missing slices: {round(ratio) - 1} missing between "
                    f"{items[i][0]} and {items[i + 1][0]} (gap {gaps[i]:.4g} mm, slice spacing {step:.4g} mm)."
                )
            raise ValueError(
                f"DICOM series in {folder} has inconsistent slice spacing: {gaps[i]:.4g} mm between {items[i][0]} "
                f"and {items[i + 1][0]}, {step:.4g} mm elsewhere."
            )
    return DicomSeries(
        folder=folder,
        series_uid=uid,
        modality=modality,
        files=tuple(p for p, _ in items),
        shape=(size[1], size[0], len(items)),
        spacing=(float(spacing[1]), float(spacing[0]), step or float(first.get("SliceThickness", 0) or 0.0)),
    )


def read_series(folder: str | Path) -> DicomSeries:
    """The one image series in ``folder``, checked (headers only).

    Args:
        folder: a folder holding the files of one DICOM image series (other non-DICOM files are ignored).

    Returns:
        The :class:`DicomSeries`, its files sorted along the slice normal.

    Raises:
        ValueError: naming the folder or file when ``folder`` is not a folder, holds no DICOM file,
            holds more than one series, holds a non-image object (SEG, RTSTRUCT, SR, ...), or its slices
            differ in orientation, pixel spacing or size, coincide, miss a slice or are unevenly spaced.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"DICOM series folder not found: {folder}")
    return _one_series(folder, _headers(folder))


def _one_series(folder: Path, series: dict[str, list[tuple[Path, object]]]) -> DicomSeries:
    """The checks of :func:`read_series` on the headers of ``folder``."""
    if not series:
        raise ValueError(f"no DICOM file in {folder}.")
    if len(series) > 1:
        raise ValueError(
            f"{folder} mixes {len(series)} DICOM series (SeriesInstanceUID {', '.join(sorted(series))}); MONAI's "
            "series reader reads one series per folder: put each series in its own folder."
        )
    uid, items = next(iter(series.items()))
    modality = str(items[0][1].get("Modality", ""))
    if modality in NON_IMAGE_MODALITIES:
        raise ValueError(f"{folder} holds a DICOM {modality} object ({items[0][0]}), not an image series.")
    return _check_geometry(folder, uid, modality, items)


def find_series(root: str | Path) -> tuple[list[DicomSeries], list[Path]]:
    """Every image series under ``root`` (``root`` itself and its sub-folders, one series per folder).

    Folders whose DICOM files are all non-image objects (SEG, RTSTRUCT, SR, ...) are skipped.

    Returns:
        ``(series, skipped)``: the checked image series sorted by folder, and the skipped folders.

    Raises:
        ValueError: as :func:`read_series` for any folder holding an image series (naming it), or when
            ``root`` holds no image series at all.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"DICOM root folder not found: {root}")
    found, skipped = [], []
    for folder in sorted([root, *(p for p in root.rglob("*") if p.is_dir() and not p.name.startswith("."))]):
        series = _headers(folder)
        if not series:
            continue
        modalities = {str(items[0][1].get("Modality", "")) for items in series.values()}
        if modalities <= NON_IMAGE_MODALITIES:
            skipped.append(folder)
            continue
        found.append(_one_series(folder, series))
    if not found:
        raise ValueError(f"no DICOM image series under {root}.")
    return found, skipped
