"""Generated multiscale OME-Zarr test volumes from real anatomy: :func:`make_volume`.

A volume of any size is rendered chunk by chunk (through :func:`~monai_shf.volume.write_multiscale`)
from the real MNI ICBM152 2009a brain template (``mni152/`` of the real-data root,
:func:`monai_shf.utils.find_real_data`): its T1 image and grey/white-matter probability maps
(197 x 233 x 189 at 1 mm) are scaled once, isotropically, so that the brain's longest side is
``tile`` voxels (trilinear), and the scaled brain is tiled with mirrored copies (seamless: a reflection
has no jump at the border) to fill ``size**3`` voxels. Edge statistics and structure sizes are those of
real anatomy at every size; no volume is ever held in memory (one scaled tile, at most
``tile**3 * 3`` bytes, plus one chunk).

The label volume (uint8 classes :data:`VOLUME_CLASSES`) is derived from the same scaled maps: 2 where
the white-matter probability is above one half, else 1 where the grey-matter one is, else 0; image and
label agree voxel for voxel. The image is T1 scaled from its 0-255 range to the full ``uint16`` range
(or kept ``float32``); the voxel size is the template's 1 mm times ``233 / tile`` (unit millimetre).
Levels: 2x means for the image, every second voxel for the label (the writer's pyramids), down to a
longest side of at most 32 voxels.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from monai_shf.utils import find_real_data
from monai_shf.validation import check_choice, check_int, check_not_input

__all__ = ["make_volume", "find_mni152", "brain_tile", "VOLUME_CLASSES", "MNI152_FILES"]

VOLUME_CLASSES = ("background", "grey_matter", "white_matter")

MNI152_FILES = tuple(f"mni_icbm152_{m}_tal_nlin_sym_09a_converted.nii.gz" for m in ("t1", "gm", "wm"))
"""T1, grey-matter and white-matter maps of the template, in that order."""

_TEMPLATE_SIDE = 233  # the template's longest side, in 1 mm voxels
_COARSEST = 32  # the pyramid goes down to the first level whose longest side is at most this


def find_mni152(root: str | Path | None = None) -> Path:
    """The real-data ``mni152`` folder (see :func:`monai_shf.utils.find_real_data`).

    Raises:
        FileNotFoundError: no real-data root holds the three template files (the message says how to set one).
    """
    folder = find_real_data("mni152", MNI152_FILES, root)
    if folder is None:
        raise FileNotFoundError(
            "make_volume needs the MNI152 template (mni152/ with "
            f"{', '.join(MNI152_FILES)}) under the real-data root: pass root= or set MONAI_SHF_DATA."
        )
    return folder


def brain_tile(tile: int, root: str | Path | None = None, dtype: str = "uint16") -> tuple[np.ndarray, np.ndarray]:
    """The template scaled so that its longest side is ``tile`` voxels.

    Returns:
        ``(image, label)``: ``(z, y, x)`` arrays (the NIfTI voxel axes, reversed) of the image in ``dtype``
        (``"uint16"`` or ``"float32"``) and the uint8 label (see the module docstring).
    """
    import nibabel as nib
    import torch
    import torch.nn.functional as F

    tile = check_int(tile, "tile", 8)
    dtype = check_choice(dtype, "dtype", ("uint16", "float32"))
    folder = find_mni152(root)
    maps = []
    for name in MNI152_FILES:
        data = np.asarray(nib.load(folder / name).dataobj, dtype=np.float32)
        maps.append(np.ascontiguousarray(data.transpose(2, 1, 0)))  # (x, y, z) -> (z, y, x)
    shape = tuple(max(1, round(s * tile / _TEMPLATE_SIDE)) for s in maps[0].shape)
    stacked = torch.from_numpy(np.stack(maps))[None]  # (1, 3, z, y, x)
    scaled = F.interpolate(stacked, size=shape, mode="trilinear", align_corners=False)[0].numpy()
    del stacked, maps
    t1, gm, wm = scaled
    label = np.zeros(shape, np.uint8)
    label[gm > 127.5] = 1
    label[wm > 127.5] = 2
    t1 = np.clip(t1, 0, 255)
    image = np.rint(t1 * (65535 / 255)).astype(np.uint16) if dtype == "uint16" else t1.astype(np.float32)
    return image, label


def _mirror(start: int, size: int, period: int) -> np.ndarray:
    """Indices ``start .. start + size`` folded into ``[0, period)`` by mirrored repetition."""
    j = np.arange(start, start + size) % (2 * period)
    return np.where(j < period, j, 2 * period - 1 - j)


def make_volume(
    out: str | Path,
    size: int | tuple[int, int, int],
    tile: int = 256,
    chunk: int = 128,
    label_out: str | Path | bool | None = None,
    dtype: str = "uint16",
    root: str | Path | None = None,
) -> tuple[Path, Path | None]:
    """Write a generated multiscale OME-Zarr volume from the real MNI152 brain, and its label volume.

    Args:
        out: the image store (a folder, e.g. ``brain.zarr``); its parent must exist. Written atomically.
        size: level-0 side ``N`` (an ``N**3`` volume) or ``(D, H, W)``.
        tile: longest side of one brain copy, in voxels (``>= 8``).
        chunk: cubic chunk side of both stores.
        label_out: the label store, never ``out`` itself; ``None``: ``<out stem>_label.zarr`` beside
            ``out``; ``False``: none.
        dtype: ``"uint16"`` (default) or ``"float32"`` image voxels.
        root: the real-data root (default: ``$MONAI_SHF_DATA``, see :func:`find_mni152`).

    Returns:
        ``(image store, label store or None)``.

    Raises:
        FileNotFoundError: the template is not found. ``ValueError``/``TypeError``: bad arguments. Nothing
        is left behind on failure (a label failure removes the image written just before).

    Memory: the scaled tile (``tile**3`` voxels of image and label) plus a few chunks.
    """
    from monai_shf.volume import multiscale_shapes, write_multiscale

    out = Path(out)
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (size, size, size)
    if not isinstance(size, (tuple, list)) or len(size) != 3:
        raise ValueError(f"size must be an int N or (D, H, W), got {size!r}.")
    shape = tuple(check_int(s, "size", 1) for s in size)
    chunk = check_int(chunk, "chunk", 1)
    if label_out is None:
        label_out = out.with_name(out.name.split(".")[0] + "_label.zarr")
    elif label_out is False:
        label_out = None
    elif label_out is True or not isinstance(label_out, (str, Path)):
        raise TypeError(f"label_out must be a path, None or False, got {label_out!r}.")
    for path, name in ((out, "out"), (label_out, "label_out")):
        if path is not None and not Path(path).parent.is_dir():
            raise ValueError(f"{name}: the folder of {path} does not exist.")
    if label_out is not None:
        label_out = Path(label_out)
        check_not_input(label_out, out, "label_out")
    image, label = brain_tile(tile, root, dtype)
    period = image.shape
    spacing = (_TEMPLATE_SIDE / tile,) * 3

    def render(source: np.ndarray):
        def block(start: tuple[int, int, int], extent: tuple[int, int, int]) -> np.ndarray:
            idx = [_mirror(a, n, p) for a, n, p in zip(start, extent, period)]
            return source[np.ix_(*idx)]

        return block

    # levels down to a side of at most _COARSEST, whatever the chunk: leaves of every size find their level
    levels = len(multiscale_shapes(shape, _COARSEST))
    common = {"chunk": chunk, "levels": levels, "spacing": spacing, "unit": "millimeter"}
    written = write_multiscale(out, shape, render(image), image.dtype, downsample="mean", name="mni152", **common)
    if label_out is None:
        return written, None
    try:
        properties = [{"label-value": v, "name": n} for v, n in enumerate(VOLUME_CLASSES)]
        lab = write_multiscale(
            label_out,
            shape,
            render(label),
            np.uint8,
            downsample="nearest",
            label={"properties": properties},
            name="mni152_label",
            **common,
        )
    except BaseException:
        shutil.rmtree(written, ignore_errors=True)
        raise
    return written, lab
