"""Tokens of a whole slide: every leaf read from the pyramid level that matches its size.

Level choice, per leaf: a level-0 box ``[a, b)`` maps to ``[floor(a / s + 0.5), floor(b / s + 0.5))``
on a level of scale ``s`` (:attr:`~monai_shf.slide.Slide.level_scales`, per axis; the same monotone
map for every leaf, so the mapped boxes still tile the level). The leaf is read from the **coarsest
level where its mapped box is at least ``p`` pixels along both axes** (level 0 when none is: leaves
smaller than ``p``), never coarser than ``max_level``. A leaf of ``p * 2**k`` level-0 pixels on a 2x
pyramid is therefore read from level ``k`` as exactly ``p x p`` pixels, and the finest levels are
decoded only where the forest has small leaves.

Resampling is :func:`monai_shf.forest.serialize` itself (same rules for ``"area"``, ``"nearest"``
and ``"fraction"``): the regions of leaves with equal mapped sizes are stacked into one image that a
one-column forest tiles, and serialised together. On a pyramid whose levels are exact 2x area means
(OpenCV ``INTER_AREA`` halvings, as ``serialize``'s own pyramid) the tokens of power-of-two leaves are
those of in-memory ``serialize`` of level 0.

Reading order: per level, leaves sorted by the storage tile (row-major) of their box's first pixel;
a mapped box is at most ``2p``-``4p`` pixels, so it touches at most 2 x 2 tiles and a cache holding
two rows of tiles decodes every tile once (the default cache does at 64K^2).

Memory: the ``(C, L, p, p)`` output plus one chunk of regions (at most ``_CHUNK_BYTES``, or one leaf's
region when a slide has no level coarse enough for it) and the slide's tile cache.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from monai_shf.forest import SERIALIZE_MODES, Forest
from monai_shf.forest.pyramid import check_token_source, leaf_read_levels
from monai_shf.forest.resample import _serialize
from monai_shf.validation import check_choice, check_int

from .base import Slide
from .reader import owned_slide

__all__ = ["serialize_slide", "leaf_levels"]

# bytes of leaf regions serialised together
_CHUNK_BYTES = 32 << 20


def leaf_levels(
    slide: Slide, forest: Forest, patch_size: int, max_level: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The level each leaf is read from, and its box there.

    Args:
        slide: the slide (``slide.shape == forest.spatial_shape``).
        forest: the slide's forest.
        patch_size: token side ``p``.
        max_level: coarsest level allowed (None: all).

    Returns:
        ``(levels (N,), starts (N, 2), sizes (N, 2))``: int64 level per leaf and its box in that
        level's pixels (row, col).
    """
    top = slide.level_count - 1 if max_level is None else slide.check_level(max_level, "max_level")
    return leaf_read_levels(forest, slide.level_scales, slide.level_shapes, patch_size, top)


def _check(slide: Slide, forest: Any, patch: int, mode: str, num_classes: Any) -> int | None:
    return check_token_source(slide, forest, patch, mode, num_classes, "slide", "build_slide_forest")


def serialize_slide(
    slide: Slide | str | os.PathLike,
    forest: Forest,
    patch_size: int,
    mode: str = "area",
    num_classes: int | None = None,
    max_level: int | None = None,
) -> np.ndarray:
    """Resample every leaf of ``forest`` in ``slide`` to a ``p x p`` token, reading from the pyramid.

    Args:
        slide: a :class:`~monai_shf.slide.Slide` or a slide path (opened and closed here).
        forest: a forest over ``slide.shape`` in level-0 pixels (:func:`~monai_shf.slide.build_slide_forest`).
        patch_size: token side ``p`` (``<=`` the slide's shorter side).
        mode: ``"area"`` (images), ``"nearest"`` (hard labels) or ``"fraction"`` (one-channel class
            labels to ``num_classes`` per-class fractions), as :func:`~monai_shf.forest.serialize`.
        num_classes: ``K`` for ``"fraction"`` (required).
        max_level: coarsest level to read from (e.g. 0 for exact class fractions of a label slide
            whose reduced levels are not class maps).

    Returns:
        ``(C, L, p, p)`` numpy tokens (``(K, L, p, p)`` for ``"fraction"``): float32 for ``"area"``
        and ``"fraction"`` (float64 slides give float64), the slide's dtype for ``"nearest"``; padding
        tokens zero.
    """
    mode = check_choice(mode, "mode", SERIALIZE_MODES)
    patch = check_int(patch_size, "patch_size", 1)
    with owned_slide(slide) as slide:
        k = _check(slide, forest, patch, mode, num_classes)
        levels, starts, sizes = leaf_levels(slide, forest, patch, max_level)
        channels = k if mode == "fraction" else slide.num_channels
        if mode == "nearest":
            dtype = np.dtype(slide.dtype)
        else:
            dtype = np.dtype(np.float64 if np.dtype(slide.dtype) == np.float64 else np.float32)
        out = np.zeros((channels, forest.length, patch, patch), dtype=dtype)
        itemsize = np.dtype(slide.dtype).itemsize * slide.num_channels
        for level in np.unique(levels):
            ids = np.flatnonzero(levels == level)
            th, tw = slide.tile_shape(int(level))
            tile_rows, tile_cols = starts[ids, 0] // th, starts[ids, 1] // tw
            ids = ids[np.lexsort((tile_cols, tile_rows))]
            region_bytes = np.prod(sizes[ids], axis=1) * itemsize
            # consecutive chunks of at most _CHUNK_BYTES (a larger leaf alone)
            chunk_ids = np.cumsum(region_bytes) // _CHUNK_BYTES
            for chunk in np.split(ids, np.flatnonzero(np.diff(chunk_ids)) + 1):
                try:
                    _serialize_chunk(slide, int(level), chunk, starts, sizes, patch, mode, k, out)
                except ValueError as error:  # e.g. a label value >= num_classes: name the slide
                    raise ValueError(f"{slide.path} (level {int(level)}): {error}") from None
        return out


def _serialize_chunk(
    slide: Slide,
    level: int,
    ids: np.ndarray,
    starts: np.ndarray,
    sizes: np.ndarray,
    patch: int,
    mode: str,
    num_classes: int | None,
    out: np.ndarray,
) -> None:
    """Read the regions of leaves ``ids`` (in reading order) and serialise them by equal size."""
    # boxes come from leaf_levels, inside the level by construction: skip read()'s per-call checks
    # (they cost more than copying a small region out of cached tiles)
    regions = [
        slide._read_region(level, (int(y), int(x)), (int(h), int(w))) for (y, x), (h, w) in zip(starts[ids], sizes[ids])
    ]
    key = sizes[ids, 0] * (int(sizes[ids, 1].max()) + 1) + sizes[ids, 1]
    for value in np.unique(key):
        rows = np.flatnonzero(key == value)
        h, w = (int(v) for v in sizes[ids[rows[0]]])
        n = len(rows)
        stacked = np.concatenate([regions[r] for r in rows], axis=1)  # (C, n * h, w)
        column = Forest(
            np.stack([np.arange(n) * h, np.zeros(n, dtype=np.int64)], axis=1),
            np.tile(np.array([[h, w]]), (n, 1)),
            (n * h, w),
            n,
        )
        # a column of leaves may be thinner than p (small leaves are upsampled): the slide itself was
        # checked against p, so the column skips serialize's bound of p by the image's sides
        tokens = _serialize(stacked, column, patch, mode, num_classes)
        out[:, ids[rows]] = tokens
