"""Full-resolution metrics of a predicted mask slide against a label slide, block by block.

Both slides are read at level 0 in blocks aligned to their storage tiles (``band`` rows of the
larger tile height, ``_BLOCK_COLS`` columns rounded to the tile width), so memory is a few blocks
plus the tile caches, never the slide's area. Each block adds its ``K x K`` confusion counts
(``np.bincount`` of ``label * K + mask``); Dice follows from the counts exactly as MONAI's
``compute_dice`` does on one-hot masks.
"""

from __future__ import annotations

import math
import os

import numpy as np

from monai_shf.validation import check_int

from .base import Slide
from .reader import owned_slide

__all__ = ["slide_dice", "slide_confusion"]

_BLOCK_COLS = 4096


def slide_confusion(mask: Slide | str | os.PathLike, label: Slide | str | os.PathLike, num_classes: int) -> np.ndarray:
    """``(K, K)`` int64 confusion counts over level 0: ``[t, p]`` pixels of label class ``t``
    predicted as class ``p``.

    Args:
        mask: predicted one-channel class-index slide (a :class:`~monai_shf.slide.Slide` or a path).
        label: the reference one-channel class-index slide, same level-0 shape.
        num_classes: ``K``; every value of both slides must lie in ``[0, K)``.
    """
    k = check_int(num_classes, "num_classes", 1)
    with owned_slide(mask) as m, owned_slide(label) as t:
        for name, s in (("mask", m), ("label", t)):
            if s.num_channels != 1:
                raise ValueError(f"{name} {s.path} must be a one-channel class-index slide, it has {s.num_channels}.")
            if np.dtype(s.dtype).kind not in "biu":
                raise ValueError(f"{name} {s.path} must hold integer class indices, its dtype is {s.dtype}.")
        if m.shape != t.shape:
            raise ValueError(f"mask {m.path} is shaped {m.shape} but label {t.path} is shaped {t.shape} at level 0.")
        (mh, mw), (lh, lw) = m.tile_shape(0), t.tile_shape(0)
        band = max(mh, lh)
        width = max(mw, lw)
        cols = max(width, _BLOCK_COLS // width * width)
        h, w = m.shape
        counts = np.zeros(k * k, dtype=np.int64)
        index_dtype = np.uint16 if k * k <= np.iinfo(np.uint16).max else np.int64
        for y in range(0, h, band):
            bh = min(band, h - y)
            for x in range(0, w, cols):
                bw = min(cols, w - x)
                pred = m.read(0, (y, x), (bh, bw))[0]
                truth = t.read(0, (y, x), (bh, bw))[0]
                for name, s, values in (("mask", m, pred), ("label", t, truth)):
                    lo, hi = int(values.min()), int(values.max())
                    if lo < 0 or hi >= k:
                        raise ValueError(
                            f"{name} {s.path} holds class {hi if hi >= k else lo} at rows {y}..{y + bh}, "
                            f"columns {x}..{x + bw}: outside [0, num_classes={k})."
                        )
                index = truth.astype(index_dtype) * index_dtype(k) + pred.astype(index_dtype)
                counts += np.bincount(index.ravel(), minlength=k * k)
        return counts.reshape(k, k)


def slide_dice(
    mask: Slide | str | os.PathLike,
    label: Slide | str | os.PathLike,
    num_classes: int,
    ignore_empty: bool = True,
) -> np.ndarray:
    """Per-class full-resolution Dice of a mask slide against a label slide, tile by tile.

    Args:
        mask: predicted one-channel class-index slide (e.g. written by ``write_slide_mask``), or a path.
        label: reference label slide of the same level-0 shape, or a path.
        num_classes: ``K`` (background included).
        ignore_empty: as MONAI's ``compute_dice``: a class absent from the label gets NaN (True) or
            1.0 / 0.0 when the mask has none / some of it (False).

    Returns:
        ``(K,)`` float64 Dice per class, background (class 0) first.
    """
    confusion = slide_confusion(mask, label, num_classes)
    tp = np.diag(confusion).astype(np.float64)
    truth = confusion.sum(1).astype(np.float64)
    pred = confusion.sum(0).astype(np.float64)
    dice = np.empty(len(tp), dtype=np.float64)
    for c in range(len(tp)):
        if truth[c] == 0:
            dice[c] = math.nan if ignore_empty else float(pred[c] == 0)
        else:
            dice[c] = 2.0 * tp[c] / (truth[c] + pred[c])
    return dice
