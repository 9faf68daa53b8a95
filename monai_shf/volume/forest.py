"""The octree forest of an out-of-core volume, built from the score map of one pyramid level.

The grid is the finest level whose longest side is at most the spec's ``max_side`` (or its
``forest_level``; the coarsest level when none is that small). Soft edges are computed slab by slab along
the first axis (:func:`monai_shf.forest.soft_edge_bands`, each slab read from the store with its halo),
after the 8-bit scaling of :func:`monai_shf.forest.soft_edge_map` with the range of the whole grid (one
extra pass); Canny edges (``edge_kind="canny"``) read the grid level whole (it is at most ``max_side**3``
voxels) and run :func:`monai_shf.forest.edge_map`. Then :func:`~monai_shf.forest.build_forest` builds
the forest on the grid with the spec. Grid boundaries map to level-0 voxels by
:func:`~monai_shf.slide.forest.grid_to_level0` (``floor(g * f + 0.5)``, the last one to the volume's
side), so the leaves tile ``volume.shape`` exactly and keep their Z-order.

:class:`~monai_shf.forest.ForestSpec`'s default ``max_side`` (8192) is a slide's: on a volume it selects
level 0 of anything up to 8192³. Volume callers pass a volume-sized one (:data:`VOLUME_MAX_SIDE`, 256,
is what ``segment-volume`` uses).

Memory: the grid's uint8 edge map (1 byte per grid voxel, at most ``max_side**3``), up to three slabs in
flight (about ``(band + 2 halo) * H * W * (C + 16)`` bytes each, see ``soft_edge_bands``) and the forest
build on the grid; nothing per level-0 voxel.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from monai_shf.forest import Forest, ForestSpec, build_forest, edge_map, soft_edge_bands, to_uint8
from monai_shf.slide.forest import grid_to_level0
from monai_shf.validation import check_int

from .reader import Volume, open_volume

__all__ = ["build_volume_forest", "volume_edge_map", "forest_level_of", "VOLUME_MAX_SIDE"]

VOLUME_MAX_SIDE = 256
"""A volume-sized ``max_side``: the score map of at most 256³ voxels (16 MiB as uint8)."""


def forest_level_of(volume: Volume, max_side: int = VOLUME_MAX_SIDE, forest_level: int | None = None) -> int:
    """The level the score map is computed on (see the module docstring)."""
    max_side = check_int(max_side, "max_side", 1)
    if forest_level is not None:
        return volume.check_level(forest_level, "forest_level")
    for level, shape in enumerate(volume.level_shapes):
        if max(shape) <= max_side:
            return level
    return volume.level_count - 1


def volume_edge_map(
    volume: Volume | str | os.PathLike,
    spec: ForestSpec | Mapping[str, Any] | int | None = None,
    band_rows: int = 16,
    **options: Any,
) -> tuple[np.ndarray, int]:
    """Score map of a volume on its forest level.

    Args:
        volume: a :class:`~monai_shf.volume.Volume` or a store path.
        spec: the :class:`~monai_shf.forest.ForestSpec` (``options`` on top): ``max_side`` and
            ``forest_level`` choose the level, ``edges`` the score map.
        band_rows: slices of the level per soft-edge slab (memory).

    Returns:
        ``(edges, level)``: ``(d, h, w)`` uint8 soft (or bool Canny) edges of that level, equal to
        :func:`~monai_shf.forest.score_map` of the level in memory, and the level.
    """
    # only the level and edge options matter here: the length is a placeholder when no spec is given
    spec = ForestSpec.create({"length": 1} if spec is None else spec, **options)
    volume = open_volume(volume)
    band = check_int(band_rows, "band_rows", 1)
    level = forest_level_of(volume, spec.max_side, spec.forest_level)
    shape = volume.level_shapes[level]
    es = spec.edges

    def raw(a: int, b: int) -> np.ndarray:
        return volume._read_region(level, (a, 0, 0), (b - a, shape[1], shape[2]))

    if es.edge_kind == "canny":
        whole = raw(0, shape[0])
        return edge_map(whole, es.kernel_size, es.thresholds, es.channel_reduction, es.edge_method), level

    read = raw
    if volume.dtype not in (np.uint8, bool):
        lo, hi = math.inf, -math.inf
        for a in range(0, shape[0], band):
            rows = raw(a, min(shape[0], a + band))
            lo, hi = min(lo, float(rows.min())), max(hi, float(rows.max()))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"{volume.path} holds NaN or infinite values at level {level}: no edge map.")

        def read(a: int, b: int) -> np.ndarray:
            return to_uint8(raw(a, b), lo, hi)

    elif volume.dtype == bool:

        def read(a: int, b: int) -> np.ndarray:
            return to_uint8(raw(a, b))

    edges = soft_edge_bands(read, shape, es.kernel_size, es.thresholds, es.channel_reduction, band_rows=band)
    return edges, level


def build_volume_forest(
    volume: Volume | str | os.PathLike,
    spec: ForestSpec | Mapping[str, Any] | int | None = None,
    band_rows: int = 16,
    **options: Any,
) -> Forest:
    """Build the SHF octree forest of an OME-Zarr volume in level-0 voxel coordinates.

    Args:
        volume: a :class:`~monai_shf.volume.Volume` or a store path.
        spec: the :class:`~monai_shf.forest.ForestSpec` (or a mapping of its options, or ``L``), with
            ``options`` (flat names) on top: exactly ``length`` tokens as
            :func:`~monai_shf.forest.build_forest`; ``max_side``/``forest_level`` choose the level of the
            score map (out of range: ``ValueError``); ``min_size`` and ``patch_size`` are in **level-0
            voxels** (as :func:`~monai_shf.slide.build_slide_forest`); ``edges`` the score map.
        band_rows: slices of the forest level per edge slab (memory).

    Returns:
        the :class:`~monai_shf.forest.Forest` over ``volume.shape``, leaves in Z-order.
    """
    spec = ForestSpec.create(spec, **options)
    volume = open_volume(volume)
    if spec.min_size > max(volume.shape):
        raise ValueError(
            f"min_size ({spec.min_size}) is larger than every side of {volume.path}, shaped {volume.shape}."
        )
    edges, level = volume_edge_map(volume, spec, band_rows)
    scales = volume.downsamples[level]
    grid_options = {"min_size": min(max(1, math.ceil(spec.min_size / min(scales))), max(edges.shape))}
    if spec.patch_size is not None:
        # a grid leaf of g voxels spans g * f level-0 voxels: g <= floor(p / f) is at token resolution
        grid_options["patch_size"] = max(1, math.floor(spec.patch_size / max(scales)))
    grid_forest = build_forest(edges, spec, **grid_options)
    del edges
    shape = tuple(volume.shape)
    starts = grid_to_level0(grid_forest.starts, scales, grid_forest.spatial_shape, shape)
    ends = grid_to_level0(grid_forest.ends, scales, grid_forest.spatial_shape, shape)
    return Forest(starts, ends - starts, shape, grid_forest.length)
