"""DICOM Segmentation output: a MONAI postprocessing transform that writes a prediction as a DICOM SEG.

:class:`SaveDicomSegd` finds the source series as MONAI's ``SaveImaged`` finds its file names (the
prediction's ``filename_or_obj``: for a series read by ``LoadImage`` that is the series folder), maps
every source slice onto the prediction's voxel grid by geometry (the prediction's RAS affine against each
slice's ImagePositionPatient / ImageOrientationPatient / PixelSpacing, never by file or instance order)
and writes one DICOM Segmentation instance with highdicom: one segment per foreground class, referencing
the source study, frame of reference and SOP instances.

Needs the ``dicom`` extra (``pip install monai_shf[dicom]``); highdicom and pydicom are imported when
the transform first runs, so ``monai_shf.transforms`` imports without them.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from monai_shf.data.dicom_series import read_series
from monai_shf.enums import SegmentationType, look_up
from monai_shf.utils import atomic_write

__all__ = ["SaveDicomSegd", "SaveDicomSegD", "SaveDicomSegDict", "series_frames"]

_LPS = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS (its own inverse)
_DEFAULT_CATEGORY = ("91723000", "SCT", "Anatomical Structure")
_DEFAULT_TYPE = ("91772007", "SCT", "Organ")


def series_frames(array: np.ndarray, affine: np.ndarray, datasets: list) -> np.ndarray:
    """The frames of ``array`` that lie on the source slices ``datasets``, by geometry.

    Args:
        array: ``(C, X, Y, Z)`` values on the voxel grid of ``affine`` (e.g. a prediction after ``Invertd``).
        affine: ``(4, 4)`` voxel-to-RAS affine of ``array`` (MONAI's convention).
        datasets: the source slices (pydicom datasets with ImagePositionPatient, ImageOrientationPatient,
            PixelSpacing, Rows, Columns), in any order.

    Returns:
        ``(len(datasets), Rows, Columns, C)`` array, frame ``i`` holding ``array`` at the pixels of
        ``datasets[i]`` (same dtype as ``array``; an index gather, no interpolation).

    Raises:
        ValueError: when a slice's pixels are not voxels of ``array`` (another grid: resample the
            prediction back to the source grid first, e.g. with ``Invertd``).
    """
    affine = np.asarray(affine, dtype=np.float64)
    inv = np.linalg.inv(affine[:3, :3])
    spatial = np.asarray(array.shape[1:])
    out = None
    for n, ds in enumerate(datasets):
        iop = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
        row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
        rows, cols = int(ds.Rows), int(ds.Columns)
        ipp = np.asarray(ds.ImagePositionPatient, dtype=np.float64)
        # voxel index of pixel (r, c): base + c * u + r * v (DICOM: position = IPP + c * dc * X + r * dr * Y, LPS)
        base = inv @ (_LPS @ ipp - affine[:3, 3])
        u = inv @ (_LPS @ (iop[:3] * col_mm))
        v = inv @ (_LPS @ (iop[3:] * row_mm))
        steps = np.rint(np.stack([base, u, v]))
        far = base + u * (cols - 1) + v * (rows - 1)
        if (
            not np.allclose(np.stack([base, u, v]), steps, atol=1e-2)
            or np.abs(steps[1]).sum() != 1
            or np.abs(steps[2]).sum() != 1
            or np.any(np.minimum(base, far) < -1e-2)
            or np.any(np.maximum(base, far) > spatial - 1 + 1e-2)
        ):
            raise ValueError(
                f"source slice {getattr(ds, 'filename', '') or ds.SOPInstanceUID} is not on the prediction's voxel "
                f"grid (shape {tuple(spatial)}, affine {affine.tolist()}): resample the prediction back to the "
                "series' grid first (Invertd)."
            )
        b, du, dv = steps.astype(np.int64)
        idx = (
            b[:, None, None] + dv[:, None, None] * np.arange(rows)[None, :, None] + du[:, None, None] * np.arange(cols)
        )
        frame = array[:, idx[0], idx[1], idx[2]]  # (C, rows, cols)
        if out is None:
            out = np.empty((len(datasets), rows, cols, array.shape[0]), dtype=array.dtype)
        out[n] = np.moveaxis(frame, 0, -1)
    return out


def _code(value: Any, default: tuple[str, str, str]):
    from pydicom.sr.coding import Code

    if value is None:
        value = default
    if isinstance(value, Mapping):
        return Code(str(value["value"]), str(value["scheme"]), str(value["meaning"]))
    if isinstance(value, (list, tuple)) and len(value) == 3:
        return Code(*(str(v) for v in value))
    raise ValueError(f"a segment code must be (value, scheme, meaning) or a mapping of those, got {value!r}.")


class SaveDicomSegd(MapTransform):
    """Write ``data[key]`` (a prediction on the source series' grid) as a DICOM Segmentation.

    The prediction is either a label map ``(1, X, Y, Z)`` (integer classes, e.g. after ``AsDiscreted
    argmax``) or per-class values ``(C, X, Y, Z)`` (e.g. softmax probabilities after ``Invertd``): with
    ``segmentation_type="binary"`` per-class values are reduced by argmax; ``"fractional"`` needs them
    (values in [0, 1]) and stores each foreground channel as a probability. One segment per foreground
    class (class 0 is background); the output is ``<output_dir>/<series folder name>_<output_postfix>.dcm``,
    written atomically. Peak memory: the ``(slices, rows, columns, segments)`` frames (1 byte per voxel
    and segment, binary; 4 bytes fractional) beside the prediction.

    Args:
        keys: keys of the predictions to write.
        output_dir: an existing folder.
        labels: class index -> segment name (``{1: "liver"}``; JSON's string keys accepted), or -> a mapping
            ``{"name": ..., "category": (value, scheme, meaning), "type": (value, scheme, meaning)}`` (SNOMED
            codes; default category "Anatomical Structure", type "Organ"). Index 0 is ignored; classes
            without a label are named ``"class <k>"``.
        segmentation_type: ``"binary"`` (default) or ``"fractional"``.
        output_postfix: file name postfix.
        meta_keys: where the metadata are when ``data[key]`` is not a MetaTensor (default ``<key>_meta_dict``).
        algorithm_name, algorithm_version: the segmentation algorithm (AlgorithmIdentificationSequence).
        series_description: SeriesDescription of the SEG.
        create_output_dir: create ``output_dir`` when missing (as ``SaveImaged`` does); by default a
            missing folder is an error.
        allow_missing_keys: as ``MapTransform``.

    Raises:
        ValueError: when ``output_dir`` does not exist (and ``create_output_dir`` is False), the source (``filename_or_obj``) is not a DICOM
            series folder, the series fails :func:`monai_shf.data.dicom_series.read_series`'s checks, or the
            prediction is not on the series' grid; ``TypeError`` for a bad ``labels``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        labels: Mapping[Any, Any] | None = None,
        segmentation_type: str = "binary",
        output_postfix: str = "seg",
        meta_keys: KeysCollection | None = None,
        algorithm_name: str = "SHFViT",
        algorithm_version: str = "0.1.0",
        series_description: str = "SHF segmentation",
        create_output_dir: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        segmentation_type = look_up(segmentation_type, "segmentation_type", SegmentationType).value
        if labels is not None and not isinstance(labels, Mapping):
            raise TypeError(f"labels must map class index -> name, got {type(labels).__name__}.")
        self.labels: dict[int, Any] = {}
        for k, v in (labels or {}).items():
            try:
                index = int(k)
            except (TypeError, ValueError):
                raise TypeError(f"labels keys must be class indices, got {k!r}.") from None
            if index > 0:
                self.labels[index] = v
        self.output_dir = Path(output_dir)
        self.segmentation_type = segmentation_type
        self.output_postfix = output_postfix
        self.meta_keys = [None] * len(self.keys) if meta_keys is None else list(meta_keys)
        self.algorithm_name, self.algorithm_version = algorithm_name, algorithm_version
        self.series_description = series_description
        self.create_output_dir = create_output_dir

    def _segment(self, number: int, index: int):
        import highdicom as hd

        label = self.labels.get(index, f"class {index}")
        spec = label if isinstance(label, Mapping) else {"name": str(label)}
        return hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=str(spec.get("name", f"class {index}")),
            segmented_property_category=_code(spec.get("category"), _DEFAULT_CATEGORY),
            segmented_property_type=_code(spec.get("type"), _DEFAULT_TYPE),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name=self.algorithm_name,
                family=_code(("123109", "DCM", "Artificial Intelligence"), _DEFAULT_TYPE),
                version=self.algorithm_version,
            ),
        )

    def _frames(self, array: np.ndarray, affine: np.ndarray, datasets: list, source: Any) -> tuple[list[int], Any]:
        """``(class indices, (slices, rows, cols, segments) frames)`` of a label map ``(1, X, Y, Z)`` or
        per-class probabilities ``(K, X, Y, Z)``, in the source series' frame order."""
        if array.shape[0] == 1:
            if self.segmentation_type == "fractional":
                raise ValueError(
                    "segmentation_type='fractional' needs per-class probabilities (C, X, Y, Z), got a label map."
                )
            classes = series_frames(array, affine, datasets)[..., 0]  # (slices, rows, cols)
            indices = sorted(set(self.labels) | set(int(c) for c in np.unique(classes) if c > 0))
            frames = np.stack([classes == k for k in indices], axis=-1) if indices else None
        else:
            indices = list(range(1, array.shape[0]))
            if self.segmentation_type == "binary":
                classes = series_frames(np.argmax(array, axis=0)[None].astype(np.uint8), affine, datasets)[..., 0]
                frames = np.stack([classes == k for k in indices], axis=-1)
            else:
                frames = series_frames(array[1:].astype(np.float32), affine, datasets)
                if frames.min() < 0 or frames.max() > 1:
                    raise ValueError(f"fractional segmentation needs values in [0, 1] (the prediction of {source}).")
        return indices, frames

    def write(self, pred: Any, meta: Mapping) -> Path:
        """Write one prediction ``(C, X, Y, Z)`` with its metadata; returns the written file."""
        import highdicom as hd
        import pydicom

        if self.create_output_dir:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        if not self.output_dir.is_dir():
            raise ValueError(f"output_dir {self.output_dir} is not an existing folder.")
        source = meta.get("filename_or_obj")
        if isinstance(source, (list, tuple)):
            source = source[0] if len(source) == 1 else source
        if not isinstance(source, (str, os.PathLike)) or not Path(source).is_dir():
            raise ValueError(
                f"SaveDicomSegd needs a DICOM series folder as the source image (filename_or_obj), got {source!r}."
            )
        series = read_series(source)
        affine = meta.get("affine")
        if affine is None:
            raise ValueError(f"the prediction of {source} has no affine in its metadata.")
        affine = affine.detach().cpu().numpy() if isinstance(affine, torch.Tensor) else np.asarray(affine)
        array = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
        if array.ndim != 4:
            raise ValueError(f"the prediction of {source} must be (C, X, Y, Z), got shape {array.shape}.")
        datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in series.files]
        indices, frames = self._frames(array, affine, datasets, source)
        if not indices:
            raise ValueError(f"no foreground class to write for {source}: give labels or a prediction with classes.")
        seg = hd.seg.Segmentation(
            source_images=datasets,
            pixel_array=frames,
            segmentation_type=self.segmentation_type.upper(),
            segment_descriptions=[self._segment(n + 1, k) for n, k in enumerate(indices)],
            series_instance_uid=hd.UID(),
            series_number=int(datasets[0].get("SeriesNumber", 0) or 0) + 1000,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="monai_shf",
            manufacturer_model_name=self.algorithm_name,
            software_versions=self.algorithm_version,
            device_serial_number="0",
            series_description=self.series_description,
            omit_empty_frames=False,
        )
        out = self.output_dir / f"{Path(source).name}_{self.output_postfix}.dcm"
        atomic_write(out, lambda tmp: seg.save_as(tmp, enforce_file_format=True))
        return out

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, meta_key in self.key_iterator(d, self.meta_keys):
            pred = d[key]
            meta = getattr(pred, "meta", None)
            if meta is None:
                meta = d.get(meta_key or f"{key}_meta_dict")
            if meta is None:
                raise ValueError(f"SaveDicomSegd: {key!r} has no metadata (a MetaTensor or {key}_meta_dict).")
            meta = dict(meta)
            if "affine" not in meta and hasattr(pred, "affine"):
                meta["affine"] = pred.affine
            self.write(pred, meta)
        return d


SaveDicomSegD = SaveDicomSegDict = SaveDicomSegd
