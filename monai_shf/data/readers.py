"""MONAI image reader for large 2D images: TIFF through tifffile, other 2D formats through Pillow.

Pillow refuses images above ``2 * PIL.Image.MAX_IMAGE_PIXELS`` (~179 Mpx: a 16K x 16K slide
region already) and decodes TIFF strips one by one; tifffile reads any size, tiled or striped,
compressed or not, in the file's own dtype. ``TiffReader`` is a drop-in replacement for MONAI's
``PILReader`` (same axis order, same metadata keys), so a datalist may mix PNG and TIFF files::

    LoadImaged(keys=["image", "label"], reader="monai_shf.data.TiffReader", dtype=None)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import PILReader
from monai.utils import MetaKeys, ensure_tuple

__all__ = ["TiffReader", "TIFF_SUFFIXES"]

TIFF_SUFFIXES = ("tif", "tiff")

# tifffile series axes: Y/X spatial, S samples (RGB), C channels; a planar file stores S first
_SPATIAL_AXES = ("Y", "X")
_CHANNEL_AXES = ("S", "C")


class _TiffImage:
    """A decoded TIFF page series: ``(H, W)`` or channel-last ``(H, W, C)`` array and its file."""

    def __init__(self, array: np.ndarray, path: str) -> None:
        self.array, self.path = array, path


class TiffReader(PILReader):
    """MONAI ``ImageReader`` for 2D images: TIFF with tifffile, PNG/JPEG/BMP with Pillow.

    TIFF files are decoded once into an array of the file's dtype (uint8 RGB stays 3 bytes per
    pixel), with no pixel-count limit. The first series is read at full resolution (level 0 of a
    pyramid). Axes follow ``PILReader``: with ``reverse_indexing=True`` (default) the array is
    ``(W, H[, C])``, so TIFF and PNG files of one image load identically and ``PILWriter`` writes
    predictions back in the right orientation.

    Args:
        reverse_indexing: swap the two spatial axes as ``PILReader`` does (MONAI's 2D convention).
        kwargs: passed to ``PILReader`` (used for the non-TIFF files).
    """

    def __init__(self, converter: Any = None, reverse_indexing: bool = True, **kwargs: Any) -> None:
        super().__init__(converter=converter, reverse_indexing=reverse_indexing, **kwargs)

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        """True for TIFF files and for the formats ``PILReader`` takes."""
        return all(_is_tiff(f) for f in ensure_tuple(filename)) or super().verify_suffix(filename)

    def read(self, data: Sequence[str | Path] | str | Path, **kwargs: Any) -> Any:
        """Decode ``data`` (one path or several): TIFF with tifffile, the rest with Pillow."""
        names = ensure_tuple(data)
        if not all(_is_tiff(f) for f in names):
            return super().read(data, **kwargs)
        images = [_TiffImage(_read_tiff(str(f)), str(f)) for f in names]
        return images if len(images) > 1 else images[0]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """``(array, meta)`` as ``PILReader`` returns them: ``(W, H[, C])`` (or ``(H, W[, C])``
        without ``reverse_indexing``), several files stacked on a new first axis."""
        images = ensure_tuple(img)
        if not all(isinstance(i, _TiffImage) for i in images):
            return super().get_data(img)
        arrays, metas = [], []
        for image in images:
            data = np.moveaxis(image.array, 0, 1) if self.reverse_indexing else image.array  # a view
            height, width = image.array.shape[:2]
            metas.append(
                {
                    "format": "TIFF",
                    "width": width,
                    "height": height,
                    MetaKeys.SPATIAL_SHAPE: np.asarray(data.shape[:2]),
                    MetaKeys.ORIGINAL_CHANNEL_DIM: -1 if data.ndim == 3 else float("nan"),
                }
            )
            arrays.append(data)
        if len(arrays) == 1:
            return arrays[0], metas[0]
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise ValueError(f"TIFF files read together must have one shape, got {sorted(shapes)}.")
        meta = dict(metas[0], **{MetaKeys.ORIGINAL_CHANNEL_DIM: 0})
        return np.stack(arrays), meta


def _is_tiff(path: str | Path) -> bool:
    return str(path).lower().rsplit(".", 1)[-1] in TIFF_SUFFIXES


def _read_tiff(path: str) -> np.ndarray:
    """The first series of a TIFF file as ``(H, W)`` or ``(H, W, C)``, in the file's dtype."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes = series.axes
        array = series.asarray()
    if array.ndim != len(axes):  # tifffile squeezes length-1 axes from `axes` and the array alike
        raise ValueError(f"cannot read image {path}: unexpected TIFF layout {axes!r} for shape {array.shape}.")
    spatial = [axes.index(a) for a in _SPATIAL_AXES if a in axes]
    channels = [i for i, a in enumerate(axes) if a in _CHANNEL_AXES]
    if len(spatial) != 2 or len(channels) > 1 or len(axes) != 2 + len(channels):
        raise ValueError(
            f"cannot read image {path}: expected a 2D TIFF (axes YX, YXS or SYX), got axes {axes!r} "
            f"with shape {array.shape}."
        )
    return np.moveaxis(array, spatial + channels, list(range(array.ndim)))
