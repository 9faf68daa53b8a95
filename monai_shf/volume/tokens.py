"""Tokens of an out-of-core volume: every leaf read from the pyramid level that matches its size.

Level choice, per leaf (as :func:`~monai_shf.slide.serialize_slide`): a level-0 box ``[a, b)`` maps to
``[floor(a / f + 0.5), floor(b / f + 0.5))`` on a level of factor ``f`` (per axis,
:attr:`~monai_shf.volume.Volume.downsamples`); the leaf is read from the **coarsest level where its mapped
box is at least ``p`` voxels along every axis** (level 0 when none is), never coarser than ``max_level``.
A leaf of ``p * 2**k`` level-0 voxels on a 2x pyramid is read from level ``k`` as exactly ``p**3`` voxels.

Reading: per level, leaves are grouped by the *block* (a chunk-aligned cube of about ``_BLOCK_BYTES``) that
holds their first voxel; the bounding box of a block's leaves is read with one zarr call (each chunk
decoded once per block), the leaves are cut out of it, and leaves of equal size are stacked and serialised
together by :func:`monai_shf.forest.serialize` (same resampling rules as in memory). On a pyramid whose
levels are exact 2x means (float volumes averaged as ``serialize``'s own pyramid does) the tokens of
power-of-two leaves are those of in-memory ``serialize`` of level 0.

Memory: the ``(C, L, p, p, p)`` output plus one block's bounding box and its regions.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from monai_shf.forest import SERIALIZE_MODES, Forest, serialize
from monai_shf.forest.pyramid import check_token_source, leaf_read_levels
from monai_shf.validation import check_choice, check_int

from .reader import Volume, open_volume

__all__ = ["serialize_volume", "leaf_levels"]

# voxel bytes of one block of a level read at once
_BLOCK_BYTES = 32 << 20


def leaf_levels(
    volume: Volume, forest: Forest, patch_size: int, max_level: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The level each leaf is read from, and its box there.

    Returns:
        ``(levels (N,), starts (N, 3), sizes (N, 3))``: int64 level per leaf and its box in that level's voxels.
    """
    top = volume.level_count - 1 if max_level is None else volume.check_level(max_level, "max_level")
    return leaf_read_levels(forest, volume.downsamples, volume.level_shapes, patch_size, top)


def _check(volume: Volume, forest: Any, patch: int, mode: str, num_classes: Any) -> int | None:
    return check_token_source(volume, forest, patch, mode, num_classes, "volume", "build_volume_forest")


def serialize_volume(
    volume: Volume | str | os.PathLike,
    forest: Forest,
    patch_size: int,
    mode: str = "area",
    num_classes: int | None = None,
    max_level: int | None = None,
) -> np.ndarray:
    """Resample every leaf of ``forest`` in ``volume`` to a ``p**3`` token, reading from the pyramid.

    Args:
        volume: a :class:`~monai_shf.volume.Volume` or a store path.
        forest: a forest over ``volume.shape`` in level-0 voxels (:func:`~monai_shf.volume.build_volume_forest`).
        patch_size: token side ``p``.
        mode: ``"area"``, ``"nearest"`` or ``"fraction"``, as :func:`~monai_shf.forest.serialize`.
        num_classes: ``K`` for ``"fraction"`` (required).
        max_level: coarsest level to read from (0 for exact class fractions of a label volume).

    Returns:
        ``(C, L, p, p, p)`` numpy tokens (``(K, L, p, p, p)`` for ``"fraction"``): float32 for ``"area"`` and
        ``"fraction"`` (float64 volumes give float64), the volume's dtype for ``"nearest"``; padding zero.
    """
    mode = check_choice(mode, "mode", SERIALIZE_MODES)
    patch = check_int(patch_size, "patch_size", 1)
    volume = open_volume(volume)
    k = _check(volume, forest, patch, mode, num_classes)
    levels, starts, sizes = leaf_levels(volume, forest, patch, max_level)
    channels = k if mode == "fraction" else volume.num_channels
    if mode == "nearest":
        dtype = np.dtype(volume.dtype)
    else:
        dtype = np.dtype(np.float64 if volume.dtype == np.float64 else np.float32)
    out = np.zeros((channels, forest.length, patch, patch, patch), dtype=dtype)
    voxel_bytes = volume.dtype.itemsize * volume.num_channels
    for level in np.unique(levels):
        level = int(level)
        ids = np.flatnonzero(levels == level)
        chunk = np.asarray(volume.chunk_shape(level))
        side = max(1, round((_BLOCK_BYTES / voxel_bytes) ** (1 / 3)))
        block = np.maximum(chunk, (side // chunk) * chunk)  # chunk-aligned block sides
        cells = starts[ids] // block
        grid = -(-np.asarray(volume.level_shapes[level]) // block)
        key = (cells[:, 0] * grid[1] + cells[:, 1]) * grid[2] + cells[:, 2]
        order = np.argsort(key, kind="stable")
        ids, key = ids[order], key[order]
        for group in np.split(ids, np.flatnonzero(np.diff(key)) + 1):
            _serialize_block(volume, level, group, starts, sizes, patch, mode, k, out)
    return out


def _serialize_block(
    volume: Volume,
    level: int,
    ids: np.ndarray,
    starts: np.ndarray,
    sizes: np.ndarray,
    patch: int,
    mode: str,
    num_classes: int | None,
    out: np.ndarray,
) -> None:
    """Read the bounding box of leaves ``ids`` once and serialise them by equal size."""
    lo = starts[ids].min(axis=0)
    hi = (starts[ids] + sizes[ids]).max(axis=0)
    box = volume._read_region(level, tuple(int(v) for v in lo), tuple(int(v) for v in hi - lo))
    local = starts[ids] - lo
    dims = sizes[ids]
    key = (dims[:, 0] * (int(dims[:, 1].max()) + 1) + dims[:, 1]) * (int(dims[:, 2].max()) + 1) + dims[:, 2]
    for value in np.unique(key):
        rows = np.flatnonzero(key == value)
        d, h, w = (int(v) for v in dims[rows[0]])
        n = len(rows)
        stacked = np.concatenate(
            [box[:, z : z + d, y : y + h, x : x + w] for z, y, x in local[rows].tolist()], axis=1
        )  # (C, n * d, h, w)
        column = Forest(
            np.stack([np.arange(n) * d, np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)], axis=1),
            np.tile(np.array([[d, h, w]]), (n, 1)),
            (n * d, h, w),
            n,
        )
        out[:, ids[rows]] = serialize(stacked, column, patch, mode=mode, num_classes=num_classes)
