"""Datalists: the embedded synthetic datasets, real-data datalist JSON, folder-layout makers and checks.

A datalist is MONAI's decathlon format: ``{"training": [{"image": ..., "label": ...}], "validation":
[...]}`` with paths relative to a base directory (or absolute). :func:`check_datalist` reads only
file headers (never decodes pixels, so it costs milliseconds per file even for large images), so a
missing file, an unreadable header, an image/label shape mismatch or a wrong channel count is reported
(naming the file) before any training starts.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_shf.utils import atomic_write

from .synthetic import synthetic_organs_3d, synthetic_tissue_2d

__all__ = [
    "ensure_synthetic_2d",
    "ensure_synthetic_3d",
    "ensure_synthetic_slides",
    "load_datalist",
    "check_datalist",
    "image_header",
    "make_datalist",
]

_NIFTI = (".nii", ".nii.gz")


def _write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2)))


def _generator_changed(root: Path, params: dict) -> bool:
    """Record the generator's parameters beside the data; True when they differ from the files'
    (then every file is regenerated, e.g. after a new ``image_size``)."""
    stamp = root / "generator.json"
    old = json.loads(stamp.read_text()) if stamp.exists() else None
    if old != params:
        _write_json(stamp, params)
        return old is not None
    return False


def _ensure_dataset(
    root: Path,
    params: dict,
    num_train: int,
    num_val: int,
    paths: Callable[[int], tuple[Path, Path]],
    make: Callable[[int, Path, Path], None],
) -> dict[str, list]:
    """Generate the missing (or, after a change of ``params``, all) cases ``make(i, image, label)`` at
    ``paths(i)`` under ``root``, write ``datalist.json`` (relative paths) and return the datalist with
    absolute paths; the first ``num_train`` cases train, the next ``num_val`` validate."""
    root.mkdir(parents=True, exist_ok=True)
    fresh = _generator_changed(root, params)
    items = []
    for i in range(num_train + num_val):
        img_path, lab_path = paths(i)
        img_path.parent.mkdir(parents=True, exist_ok=True)
        lab_path.parent.mkdir(parents=True, exist_ok=True)
        if fresh or not (img_path.exists() and lab_path.exists()):
            make(i, img_path, lab_path)
        items.append({"image": str(img_path.relative_to(root)), "label": str(lab_path.relative_to(root))})
    datalist = {"training": items[:num_train], "validation": items[num_train:]}
    _write_json(root / "datalist.json", datalist)
    return _absolute(datalist, root)


def ensure_synthetic_2d(
    dataset_dir: str | Path, num_train: int = 8, num_val: int = 2, size: int = 1024, seed: int = 0
) -> dict[str, list]:
    """Write (once) a generated pathology-like 2D dataset to ``dataset_dir`` and return its datalist.

    RGB PNG images of ``size x size`` with irregular tissue regions and fine boundaries; PNG labels
    (0 background, 1 tissue). Re-running reuses the files (they are regenerated when missing).
    """
    from PIL import Image

    root = Path(dataset_dir)

    def make(i: int, img_path: Path, lab_path: Path) -> None:
        image, label = synthetic_tissue_2d(size, seed=seed + i)
        # PNG stores (row, col); MONAI's PIL reader returns (col, row), consistently for both keys
        atomic_write(img_path, lambda tmp: Image.fromarray(np.moveaxis(image, 0, -1)).save(tmp, format="PNG"))
        atomic_write(lab_path, lambda tmp: Image.fromarray(label[0]).save(tmp, format="PNG"))

    return _ensure_dataset(
        root,
        {"kind": "tissue_2d", "size": int(size), "seed": int(seed)},
        num_train,
        num_val,
        lambda i: (root / "images" / f"tissue_{i:03d}.png", root / "labels" / f"tissue_{i:03d}.png"),
        make,
    )


def ensure_synthetic_3d(
    dataset_dir: str | Path, num_train: int = 6, num_val: int = 2, size: Sequence[int] = (96, 96, 64), seed: int = 0
) -> dict[str, list]:
    """Write (once) a generated CT-like 3D dataset (NIfTI, 1.5 x 1.5 x 2.5 mm, HU-like intensities,
    organ-like ellipsoids: 0 background, 1 organ A, 2 organ B) and return its datalist."""
    import nibabel as nib

    root = Path(dataset_dir)
    affine = np.diag([1.5, 1.5, 2.5, 1.0])

    def make(i: int, img_path: Path, lab_path: Path) -> None:
        image, label = synthetic_organs_3d(tuple(size), seed=seed + i)
        atomic_write(img_path, lambda tmp: nib.save(nib.Nifti1Image(image, affine), tmp))
        atomic_write(lab_path, lambda tmp: nib.save(nib.Nifti1Image(label, affine), tmp))

    return _ensure_dataset(
        root,
        {"kind": "organs_3d", "size": [int(s) for s in size], "seed": int(seed)},
        num_train,
        num_val,
        lambda i: (root / "imagesTr" / f"case_{i:03d}.nii.gz", root / "labelsTr" / f"case_{i:03d}.nii.gz"),
        make,
    )


def ensure_synthetic_slides(
    dataset_dir: str | Path, num_train: int = 4, num_val: int = 2, size: int = 4096, seed: int = 0
) -> dict[str, list]:
    """Write (once) pyramidal whole-slide test data to ``dataset_dir`` and return its datalist.

    Each case is a tiled pyramidal RGB TIFF (JPEG tiles) of ``size x size`` made from real tissue
    texture (``shared/data/ihc2d``) and its uint8 label slide (0 background, 1 tissue, 2 DAB-positive),
    written tile by tile by :func:`monai_shf.slide.make_slide` (seconds per 4K^2 slide). Re-running
    reuses the files (they are regenerated when missing or when the parameters change).
    """
    from .synthetic_slides import make_slide

    root = Path(dataset_dir)
    return _ensure_dataset(
        root,
        {"kind": "slides", "size": int(size), "seed": int(seed)},
        num_train,
        num_val,
        lambda i: (root / "slides" / f"slide_{i:03d}.tif", root / "slides" / f"slide_{i:03d}_label.tif"),
        lambda i, img_path, lab_path: make_slide(img_path, size, seed=seed + i, label_out=lab_path),
    )


def _absolute(datalist: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative paths made absolute: string values of the items of every list section (and plain
    path strings, as in MSD ``"test"`` lists); other keys (``"name"``, ``"numTraining"``...) as is."""

    def fix(value: Any) -> Any:
        return str((base / value).resolve()) if isinstance(value, str) and not Path(value).is_absolute() else value

    out: dict[str, Any] = {}
    for section, items in datalist.items():
        if isinstance(items, list):
            out[section] = [
                {k: fix(v) for k, v in item.items()} if isinstance(item, dict) else fix(item) for item in items
            ]
        else:
            out[section] = items
    return out


def load_datalist(path: str | Path, base_dir: str | Path | None = None) -> dict[str, list]:
    """Read a datalist JSON; relative paths are taken from ``base_dir`` (default: the JSON's folder).

    Raises ``ValueError`` naming the file when it is missing, not JSON, or has no ``"training"`` list.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"datalist file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"datalist {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("training"), list):
        raise ValueError(f"datalist {path} must be an object with a 'training' list (and optionally 'validation').")
    data.setdefault("validation", [])
    return _absolute(data, Path(base_dir) if base_dir is not None else path.parent)


def image_header(path: str | Path) -> tuple[tuple[int, ...], int]:
    """``(spatial_shape, channels)`` of an image file, read from its header only (no pixel is decoded).

    NIfTI via nibabel's header (a 4th dimension counts as channels; an uncompressed ``.nii`` shorter than
    its header says is reported, from the file size), TIFF via tifffile's page shapes (a trailing axis of
    3 or 4 counts as channels), PNG/JPEG and others via Pillow's ``Image.open`` without ``load()``. A file
    whose pixel data is damaged after an intact header (e.g. a truncated ``.nii.gz`` or PNG) passes here and
    fails when it is loaded. Raises ``ValueError`` naming the file if it is missing or its header cannot
    be read.
    """
    path = Path(path)
    if path.is_dir():  # a DICOM series folder, as MONAI's LoadImage reads it
        from .dicom_series import read_series

        return read_series(path).shape, 1
    if not path.is_file():
        raise ValueError(f"image file not found: {path}")
    name = path.name.lower()
    try:
        return _read_header(path, name)
    except Exception as e:  # any reader failure: a corrupt, truncated or unsupported file
        raise ValueError(f"cannot read image {path}: {type(e).__name__}: {e}") from None


def _read_header(path: Path, name: str) -> tuple[tuple[int, ...], int]:
    """The per-format header reader of :func:`image_header` (errors are wrapped there)."""
    if name.endswith(_NIFTI):
        import nibabel as nib

        img = nib.load(str(path))  # parses the header; the data stay on disk until asked for
        shape = tuple(int(s) for s in img.shape)
        if not name.endswith(".gz"):  # a plain .nii holds its voxels at vox_offset: its size says if they are all there
            header = img.header
            needed = int(header.get_data_offset()) + math.prod(shape) * header.get_data_dtype().itemsize
            if path.stat().st_size < needed:
                raise OSError(f"file is {path.stat().st_size} bytes, its header describes {needed}")
        if len(shape) == 5:  # (X, Y, Z, 1, C): NIfTI's vector layout, MONAI's multi-channel files
            return shape[:3], shape[4]
        return (shape[:3], shape[3]) if len(shape) == 4 else (shape, 1)
    if name.endswith((".tif", ".tiff")):
        import tifffile

        with tifffile.TiffFile(str(path)) as tif:
            shape = tuple(int(s) for s in tif.series[0].shape)
        if len(shape) == 3 and shape[-1] in (3, 4):
            return shape[:2], shape[-1]
        return shape, 1
    from PIL import Image

    with Image.open(path) as im:  # reads the header; no load(): pixels are decoded lazily, never here
        return (im.size[1], im.size[0]), len(im.getbands())


def check_datalist(
    items: Sequence[dict[str, Any]],
    image_key: str = "image",
    label_key: str | None = "label",
    image_channels: int | None = None,
    require_label: bool = False,
) -> None:
    """Check every item before training: files exist and are readable, image and label share a
    spatial shape, the label has one channel and the image ``image_channels`` (when given); with
    ``require_label`` every item must have a label.

    Raises ``ValueError`` naming the offending file.
    """
    if not items:
        raise ValueError("the datalist has no items.")
    for i, item in enumerate(items):
        if image_key not in item:
            raise ValueError(f"datalist item {i} has no {image_key!r} entry: {item}")
        shape, channels = image_header(item[image_key])
        if image_channels is not None and channels != image_channels:
            raise ValueError(
                f"image {item[image_key]} has {channels} channel(s), the bundle expects {image_channels} (image_channels)."
            )
        if require_label and label_key is not None and label_key not in item:
            raise ValueError(
                f"datalist item {i} ({item[image_key]}) has no {label_key!r} entry; training needs labels."
            )
        if label_key is not None and label_key in item:
            lshape, lchannels = image_header(item[label_key])
            if lshape != shape:
                raise ValueError(
                    f"label {item[label_key]} has spatial shape {lshape} but image {item[image_key]} has {shape}."
                )
            if lchannels != 1:
                raise ValueError(
                    f"label {item[label_key]} has {lchannels} channels; labels must be one channel of class indices."
                )


def _case_id(name: str) -> str:
    stem = re.sub(r"(\.nii\.gz|\.nii|\.tiff?|\.png|\.jpe?g|\.svs)$", "", name, flags=re.I)
    stem = re.sub(r"_0000$", "", stem)  # nnU-Net / KiTS modality suffix
    digits = re.findall(r"\d+", stem)
    return digits[-1].lstrip("0") or "0" if digits else stem


def make_datalist(
    root: str | Path,
    layout: str = "msd",
    output: str | Path | None = None,
    val_fraction: float = 0.2,
    image_suffix: str = "",
    label_suffix: str = "_mask",
    seed: int = 0,
) -> dict[str, list]:
    """Build a datalist from a folder layout and (optionally) write it as JSON.

    Layouts:
        ``"msd"``: ``root/imagesTr`` and ``root/labelsTr`` (Medical Segmentation Decathlon, BTCV,
        KiTS/nnU-Net); files are paired by name, else by case number (``img0001`` with
        ``label0001``, ``case_00000_0000`` with ``case_00000``).
        ``"paired"``: image and mask files side by side in ``root`` (PAIP-like), a mask being the
        image's stem + ``label_suffix`` (e.g. ``01_01_0083.tif`` and ``01_01_0083_mask.tif``).
        ``"dicom"``: DICOM image series under ``root``, one folder per series (headers only, checked by
        :func:`monai_shf.data.dicom_series.find_series`: mixed series, missing slices or uneven spacing raise
        ``ValueError`` naming the folder; folders of SEG/RTSTRUCT/SR objects are skipped); the items
        (``{"image": folder}``, no label) go to ``"testing"`` (for inference; ``"training"`` and
        ``"validation"`` stay empty).

    Paths are stored relative to ``root``; a ``val_fraction`` of cases (at least one when there are
    two or more) goes to ``"validation"``, chosen with ``seed``.
    """
    root = Path(root)
    if layout == "dicom":
        from .dicom_series import find_series

        series, _ = find_series(root)
        datalist = {
            "training": [],
            "validation": [],
            "testing": [{"image": str(s.folder.relative_to(root))} for s in series],
        }
        if output is not None:
            _write_json(Path(output), datalist)
        return datalist
    if layout == "msd":
        images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
        if not images_dir.is_dir() or not labels_dir.is_dir():
            raise ValueError(f"layout 'msd' needs {images_dir} and {labels_dir}.")
        labels = {p.name: p for p in labels_dir.iterdir() if not p.name.startswith(".")}
        by_id = {_case_id(n): p for n, p in labels.items()}
        pairs = []
        for img in sorted(p for p in images_dir.iterdir() if not p.name.startswith(".")):
            lab = labels.get(img.name) or by_id.get(_case_id(img.name))
            if lab is None:
                raise ValueError(f"no label in {labels_dir} for image {img}.")
            pairs.append((img, lab))
    elif layout == "paired":
        files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
        pairs = []
        for img in files:
            stem = img.name.split(".")[0]
            if label_suffix and stem.endswith(label_suffix):
                continue
            if image_suffix and not stem.endswith(image_suffix):
                continue
            base = stem[: len(stem) - len(image_suffix)] if image_suffix else stem
            matches = [f for f in files if f.name.split(".")[0] == base + label_suffix]
            if not matches:
                raise ValueError(f"no mask '{base}{label_suffix}.*' beside image {img}.")
            pairs.append((img, matches[0]))
    else:
        raise ValueError(f"layout must be 'msd', 'paired' or 'dicom', got {layout!r}.")
    if not pairs:
        raise ValueError(f"no images found under {root} for layout {layout!r}.")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    order = np.random.default_rng(seed).permutation(len(pairs))
    n_val = max(1, round(val_fraction * len(pairs))) if len(pairs) > 1 and val_fraction > 0 else 0
    val = set(order[:n_val].tolist())
    entry = lambda pair: {"image": str(pair[0].relative_to(root)), "label": str(pair[1].relative_to(root))}  # noqa: E731
    datalist = {
        "training": [entry(p) for i, p in enumerate(pairs) if i not in val],
        "validation": [entry(p) for i, p in enumerate(pairs) if i in val],
    }
    if output is not None:
        _write_json(Path(output), datalist)
    return datalist
