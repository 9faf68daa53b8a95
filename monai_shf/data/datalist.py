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
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_shf.utils import atomic_write, file_stem

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


def _read_stamp(root: Path) -> Any:
    stamp = root / "generator.json"
    try:
        return json.loads(stamp.read_text()) if stamp.exists() else None
    except json.JSONDecodeError:  # a damaged stamp vouches for nothing
        return None


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
    absolute paths; the first ``num_train`` cases train, the next ``num_val`` validate.

    The generator's parameters are recorded in ``generator.json`` beside the data, written last: a
    regeneration first removes it, so one that is interrupted (an error, a kill) leaves no stamp, and
    the next run regenerates every file instead of trusting files made with other parameters. Files
    found without a stamp are regenerated for the same reason."""
    root.mkdir(parents=True, exist_ok=True)
    fresh = _read_stamp(root) != params
    if fresh:
        (root / "generator.json").unlink(missing_ok=True)
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
    if fresh:
        _write_json(root / "generator.json", params)
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
    texture (the real ``ihc2d`` image when found, see :func:`monai_shf.utils.find_real_data`) and its uint8 label slide (0 background, 1 tissue, 2 DAB-positive),
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
    """Relative paths made absolute: string values of the items of every list section, lists of
    strings among them (multimodal images, one file per channel) and plain path strings (MSD ``"test"``
    lists); other keys (``"name"``, ``"numTraining"``...) and non-string values as they are. An item
    that is neither an object nor a path string is a ``ValueError`` naming its section and index."""

    def fix(value: Any) -> Any:
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return [fix(v) for v in value]
        return str((base / value).resolve()) if isinstance(value, str) and not Path(value).is_absolute() else value

    out: dict[str, Any] = {}
    for section, items in datalist.items():
        if isinstance(items, list):
            fixed = []
            for i, item in enumerate(items):
                if isinstance(item, dict):
                    fixed.append({k: fix(v) for k, v in item.items()})
                elif isinstance(item, str):
                    fixed.append(fix(item))
                else:
                    raise ValueError(
                        f"datalist {section!r} item {i} must be an object such as {{'image': path, 'label': path}} "
                        f"or a path string, got {type(item).__name__}: {item!r}."
                    )
            out[section] = fixed
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


def _paths(value: Any, where: str) -> list[str]:
    """The file(s) of a datalist entry: a path, or a non-empty list of paths (one file per channel)."""
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (str, os.PathLike)) for v in value):
        return [os.fspath(v) for v in value]
    raise ValueError(f"{where} must be a file path or a non-empty list of file paths, got {value!r}.")


def _header(value: Any, where: str) -> tuple[tuple[int, ...], int, str]:
    """``(spatial_shape, channels, name)`` of an entry; the files of a list must share a spatial shape
    (their channels add up, as ``LoadImaged`` stacks them)."""
    files = _paths(value, where)
    shape, channels = image_header(files[0])
    for f in files[1:]:
        other, c = image_header(f)
        if other != shape:
            raise ValueError(f"{where}: {f} has spatial shape {other} but {files[0]} has {shape}.")
        channels += c
    return shape, channels, files[0] if len(files) == 1 else f"{files[0]} (+{len(files) - 1} more)"


def check_datalist(
    items: Sequence[dict[str, Any]],
    image_key: str = "image",
    label_key: str | None = "label",
    image_channels: int | None = None,
    require_label: bool = False,
) -> None:
    """Check every item before training: files exist and are readable, image and label share a
    spatial shape, the label has one channel and the image ``image_channels`` (when given); with
    ``require_label`` every item must have a label. An image may be a list of files (one per
    channel or modality) of one spatial shape.

    Raises ``ValueError`` naming the offending file (or the item's index, for an item that is not an
    object of paths).
    """
    if not items:
        raise ValueError("the datalist has no items.")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"datalist item {i} must be an object such as {{'image': path}}, got {item!r}.")
        if image_key not in item:
            raise ValueError(f"datalist item {i} has no {image_key!r} entry: {item}")
        shape, channels, image = _header(item[image_key], f"datalist item {i} {image_key!r}")
        if image_channels is not None and channels != image_channels:
            raise ValueError(
                f"image {image} has {channels} channel(s), the bundle expects {image_channels} (image_channels)."
            )
        if require_label and label_key is not None and label_key not in item:
            raise ValueError(f"datalist item {i} ({image}) has no {label_key!r} entry; training needs labels.")
        if label_key is not None and label_key in item:
            lshape, lchannels, label = _header(item[label_key], f"datalist item {i} {label_key!r}")
            if lshape != shape:
                raise ValueError(f"label {label} has spatial shape {lshape} but image {image} has {shape}.")
            if lchannels != 1:
                raise ValueError(
                    f"label {label} has {lchannels} channels; labels must be one channel of class indices."
                )


# nnU-Net / KiTS / BraTS modality suffix of an image (``case_00000_0000``), the image and label
# words some layouts put around the case name (BTCV ``img0001`` / ``label0001``, ``p1_seg``)
_MODALITY = re.compile(r"_(\d{4})$")
_IMAGE_PREFIX = re.compile(r"^(?:img|image)(?=[\d_-])[_-]?", re.I)
_LABEL_PREFIX = re.compile(r"^(?:label|labels|seg|mask|gt)(?=[\d_-])[_-]?", re.I)
_LABEL_SUFFIX = re.compile(r"[_-](?:label|labels|seg|segmentation|mask|gt)$", re.I)


def _image_case(path: Path) -> tuple[str, int | None]:
    """``(case, modality)`` of an image file: its whole stem less a modality suffix and an image prefix."""
    stem = file_stem(path)
    match = _MODALITY.search(stem)
    modality = int(match.group(1)) if match else None
    if match:
        stem = stem[: match.start()]
    return _IMAGE_PREFIX.sub("", stem, count=1) or stem, modality


def _label_case(path: Path) -> str:
    """The case of a label file: its whole stem less a label prefix or suffix."""
    stem = file_stem(path)
    return _LABEL_SUFFIX.sub("", _LABEL_PREFIX.sub("", stem, count=1) or stem, count=1) or stem


def _listing(paths: Sequence[Path]) -> str:
    return ", ".join(str(p) for p in paths)


def _msd_pairs(images_dir: Path, labels_dir: Path) -> list[tuple[Path | list[Path], Path]]:
    """Images paired with labels by whole case name (see :func:`make_datalist`)."""
    labels = sorted(p for p in labels_dir.iterdir() if not p.name.startswith("."))
    by_name = {p.name: p for p in labels}
    by_case: dict[str, list[Path]] = {}
    for lab in labels:
        by_case.setdefault(_label_case(lab), []).append(lab)
    cases: dict[str, list[tuple[int | None, Path]]] = {}
    for img in sorted(p for p in images_dir.iterdir() if not p.name.startswith(".")):
        if img.name in by_name:  # the same name in both folders (MSD): a case of its own
            cases.setdefault("\0" + img.name, []).append((None, img))
        else:
            case, modality = _image_case(img)
            cases.setdefault(case, []).append((modality, img))
    pairs: list[tuple[Path | list[Path], Path]] = []
    owner: dict[Path, list[Path]] = {}
    for case, members in cases.items():
        files = [img for _, img in members]
        if case.startswith("\0"):
            candidates = [by_name[case[1:]]]
        else:
            candidates = by_case.get(case, [])
        if not candidates:
            raise ValueError(f"no label in {labels_dir} for image {_listing(files)} (case {case!r}).")
        if len(candidates) > 1:
            raise ValueError(
                f"ambiguous labels for image {_listing(files)} (case {case!r}): {_listing(candidates)}; "
                "keep one label per case."
            )
        modalities = [m for m, _ in members]
        if len(members) > 1 and (None in modalities or len(set(modalities)) != len(modalities)):
            raise ValueError(
                f"images {_listing(files)} are one case {case!r} for label {candidates[0]}: rename them, or "
                "give each modality a _0000, _0001, ... suffix."
            )
        label = candidates[0]
        if label in owner:
            raise ValueError(f"label {label} would pair with images {_listing(owner[label])} and {_listing(files)}.")
        owner[label] = files
        ordered = [img for _, img in sorted(members, key=lambda m: m[0] or 0)]
        pairs.append((ordered[0] if len(ordered) == 1 else ordered, label))
    return sorted(pairs, key=lambda p: str(p[0][0] if isinstance(p[0], list) else p[0]))


def _paired_pairs(root: Path, image_suffix: str, label_suffix: str) -> list[tuple[Path, Path]]:
    """Images paired with the mask files beside them (see :func:`make_datalist`)."""
    files = sorted(
        p for p in root.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() != ".json"
    )
    by_stem: dict[str, list[Path]] = {}
    for f in files:
        by_stem.setdefault(file_stem(f), []).append(f)
    pairs, owner = [], {}
    for img in files:
        stem = file_stem(img)
        if label_suffix and stem.endswith(label_suffix):
            continue
        if image_suffix and not stem.endswith(image_suffix):
            continue
        base = stem[: len(stem) - len(image_suffix)] if image_suffix else stem
        matches = by_stem.get(base + label_suffix, [])
        if not matches:
            raise ValueError(f"no mask '{base}{label_suffix}.*' beside image {img}.")
        if len(matches) > 1:
            raise ValueError(f"ambiguous masks for image {img}: {_listing(matches)}; keep one.")
        if matches[0] in owner:
            raise ValueError(f"mask {matches[0]} would pair with images {owner[matches[0]]} and {img}.")
        owner[matches[0]] = img
        pairs.append((img, matches[0]))
    return pairs


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
        KiTS/nnU-Net). An image pairs with the label of the same file name, else with the label of
        the same *whole case name*: the file's stem (``case.v1.nii.gz`` -> ``case.v1``) less an nnU-Net
        modality suffix (``_0000``) and an ``img``/``image`` prefix for images, less a
        ``label``/``seg``/``mask``/``gt`` prefix or suffix for labels (``img0001`` with ``label0001``,
        ``case_00000_0000`` with ``case_00000``, ``p1_s1`` with ``p1_s1_seg``). The images of one case
        with modality suffixes ``_0000``, ``_0001``... form one item whose ``"image"`` is their list
        (``LoadImaged`` stacks them as channels).
        ``"paired"``: image and mask files side by side in ``root`` (PAIP-like), a mask being the
        image's whole stem + ``label_suffix`` (``01_01_0083.tif`` and ``01_01_0083_mask.tif``,
        ``case.v1.tif`` and ``case.v1_mask.tif``); ``.json`` files (the datalist itself) are ignored.
        ``"dicom"``: DICOM image series under ``root``, one folder per series (headers only, checked by
        :func:`monai_shf.data.dicom_series.find_series`: mixed series, missing slices or uneven spacing raise
        ``ValueError`` naming the folder; folders of SEG/RTSTRUCT/SR objects are skipped); the items
        (``{"image": folder}``, no label) go to ``"testing"`` (for inference; ``"training"`` and
        ``"validation"`` stay empty).

    A missing label, two labels for one case, two images for one label (other than modalities) are a
    ``ValueError`` listing the files: nothing is paired by a guess.

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
        pairs = _msd_pairs(images_dir, labels_dir)
    elif layout == "paired":
        pairs = _paired_pairs(root, image_suffix, label_suffix)
    else:
        raise ValueError(f"layout must be 'msd', 'paired' or 'dicom', got {layout!r}.")
    if not pairs:
        raise ValueError(f"no images found under {root} for layout {layout!r}.")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    order = np.random.default_rng(seed).permutation(len(pairs))
    n_val = max(1, round(val_fraction * len(pairs))) if len(pairs) > 1 and val_fraction > 0 else 0
    val = set(order[:n_val].tolist())

    def relative(p: Path | list[Path]) -> str | list[str]:
        return [str(q.relative_to(root)) for q in p] if isinstance(p, list) else str(p.relative_to(root))

    entry = lambda pair: {"image": relative(pair[0]), "label": relative(pair[1])}  # noqa: E731
    datalist = {
        "training": [entry(p) for i, p in enumerate(pairs) if i not in val],
        "validation": [entry(p) for i, p in enumerate(pairs) if i in val],
    }
    if output is not None:
        _write_json(Path(output), datalist)
    return datalist
