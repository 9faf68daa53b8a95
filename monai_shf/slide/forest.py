"""The forest of a whole slide, built from the edge map of one low-resolution pyramid level.

The edge map is computed on a *grid*: one pyramid level (the finest whose longer side is at most
``max_side``, or ``forest_level``), or, when no level is that small, the coarsest level reduced by the
integer factor ``f = ceil(longer side / max_side)`` (OpenCV ``INTER_AREA`` block means, band by band).
The grid's edges are computed band by band (:func:`monai_shf.forest.soft_edge_bands`, default, or
:func:`monai_shf.forest.canny_bands`), then
:func:`~monai_shf.forest.build_forest` builds the forest on the grid with every option it has (exact
``L``, Z-order, tie-break, ``fill``, ...). Grid boundaries ``g`` map to level-0 boundaries
``floor(g * s + 0.5)`` (``s``: level-0 pixels per grid pixel along the axis, see
:attr:`~monai_shf.slide.Slide.level_scales`), the last one to the slide's side, so the leaves tile
``slide.shape`` exactly, keep their Z-order, and non-integer downsamples need no special case (a
monotone map of shared boundaries cannot open gaps or overlaps).

``min_size`` is in **level-0 pixels**, like the forest it constrains: the grid build uses
``max(1, ceil(min_size / s_min))`` grid pixels (``s_min`` the smaller axis scale), so no leaf is
smaller than ``min_size`` level-0 pixels, and no leaf is smaller than one grid pixel (``s`` level-0
pixels) whatever ``min_size`` says: the edge map has no finer information.

Memory: one band of the grid image (``band_rows x grid width x C`` bytes, plus the source rows of one
band when a factor ``f`` is applied, read in chunks of at most ``_SOURCE_CHUNK_BYTES``) and the grid's
uint8 soft (or bool Canny) edge map (1 byte per grid pixel), plus the slide's tile cache; never the slide's area.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cv2 as cv
import numpy as np

from monai_shf.forest import Forest, ForestSpec, build_forest, canny_bands, soft_edge_bands, to_uint8
from monai_shf.validation import check_int

from .base import Slide
from .reader import owned_slide

__all__ = ["build_slide_forest", "slide_edge_map", "forest_grid", "grid_to_level0"]

# source pixels read at once when a level is reduced by an integer factor on the fly
_SOURCE_CHUNK_BYTES = 64 << 20


def forest_grid(slide: Slide, max_side: int = 8192, forest_level: int | None = None) -> tuple[int, int]:
    """``(level, factor)`` of the grid the edge map is computed on (see the module docstring).

    Raises:
        ValueError: ``forest_level`` out of range (the message names the file and its levels).
    """
    max_side = check_int(max_side, "max_side", 1)
    if forest_level is not None:
        return slide.check_level(forest_level, "forest_level"), 1
    for level, shape in enumerate(slide.level_shapes):
        if max(shape) <= max_side:
            return level, 1
    level = slide.level_count - 1
    return level, math.ceil(max(slide.level_shapes[level]) / max_side)


def _row_reader(slide: Slide, level: int, factor: int, grid: tuple[int, int]) -> Callable[[int, int], np.ndarray]:
    """``read_rows(r0, r1) -> (C, r1 - r0, grid_w)`` rows of the grid image in the slide's dtype
    (bool as uint8 0/255, ``float32`` for dtypes OpenCV cannot average)."""
    gw = grid[1]
    c = slide.num_channels
    itemsize = np.dtype(slide.dtype).itemsize

    def native(rows: np.ndarray) -> np.ndarray:
        if rows.dtype == bool:
            return to_uint8(rows)  # 0 / 255
        if rows.dtype not in (np.uint8, np.uint16, np.int16, np.float32, np.float64):
            return rows.astype(np.float32)
        return rows

    if factor == 1:
        return lambda r0, r1: native(slide.read(level, (r0, 0), (r1 - r0, gw)))

    per_grid_row = factor * gw * factor * c * itemsize
    chunk = max(1, _SOURCE_CHUNK_BYTES // per_grid_row)

    def read_rows(r0: int, r1: int) -> np.ndarray:
        out = None
        for a in range(r0, r1, chunk):
            b = min(r1, a + chunk)
            src = native(slide.read(level, (a * factor, 0), ((b - a) * factor, gw * factor)))
            if out is None:
                out = np.empty((c, r1 - r0, gw), dtype=src.dtype)
            for ch in range(c):
                cv.resize(src[ch], (gw, b - a), dst=out[ch, a - r0 : b - r0], interpolation=cv.INTER_AREA)
        return out

    return read_rows


def _uint8_rows(read_rows: Callable[[int, int], np.ndarray], height: int, dtype: np.dtype, band_rows: int) -> Callable:
    """``read_rows`` brought to uint8 the way :func:`~monai_shf.forest.edge_map` does for a whole
    image (:func:`~monai_shf.forest.to_uint8`): uint8 and bool (0/255) as they are, anything else
    min-max scaled with the range of the *whole grid* (one extra pass to find it), so bands agree."""
    if dtype in (np.uint8, bool):
        return read_rows
    lo, hi = math.inf, -math.inf
    for r0 in range(0, height, band_rows):
        rows = read_rows(r0, min(height, r0 + band_rows))
        lo, hi = min(lo, float(rows.min())), max(hi, float(rows.max()))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("the slide holds NaN or infinite values: no edge map can be computed.")
    return lambda r0, r1: to_uint8(read_rows(r0, r1), lo, hi)


def slide_edge_map(
    slide: Slide | str | os.PathLike,
    spec: ForestSpec | Mapping[str, Any] | int | None = None,
    band_rows: int = 1024,
    **options: Any,
) -> tuple[np.ndarray, tuple[float, float]]:
    """Score map of a slide on its forest grid.

    Args:
        slide: a :class:`~monai_shf.slide.Slide` or a path (opened and closed here).
        spec: the :class:`~monai_shf.forest.ForestSpec` (``options`` on top): its ``max_side`` and
            ``forest_level`` choose the grid (module docstring), its ``edges`` the score map: soft edges
            (:func:`~monai_shf.forest.soft_edge_bands`, uint8) or Canny (:func:`~monai_shf.forest.canny_bands`, bool).
        band_rows: grid rows per band (memory).

    Returns:
        ``(edges, (sy, sx))``: ``(h, w)`` uint8 (soft) or bool (Canny) edge map of the grid and the level-0
        pixels per grid pixel along each axis.
    """
    # only the pyramid and edge options matter here: the length is a placeholder when no spec is given
    spec = ForestSpec.create({"length": 1} if spec is None else spec, **options)
    band_rows = check_int(band_rows, "band_rows", 1)
    edges_spec = spec.edges
    with owned_slide(slide) as slide:
        level, factor = forest_grid(slide, spec.max_side, spec.forest_level)
        h, w = slide.level_shapes[level]
        grid = (max(1, h // factor), max(1, w // factor))
        if factor > 1 and (h < factor or w < factor):
            factor = 1  # a sliver of a level thinner than the factor: use the level as it is
            grid = (h, w)
        read_rows = _uint8_rows(_row_reader(slide, level, factor, grid), grid[0], np.dtype(slide.dtype), band_rows)
        edges = (canny_bands if edges_spec.edge_kind == "canny" else soft_edge_bands)(
            read_rows,
            grid,
            kernel_size=edges_spec.kernel_size,
            thresholds=edges_spec.thresholds,
            channel_reduction=edges_spec.channel_reduction,
            band_rows=band_rows,
        )
        sy, sx = slide.level_scales[level]
        return edges, (sy * factor, sx * factor)


def grid_to_level0(
    bounds: np.ndarray, scale: Sequence[float], grid_shape: Sequence[int], shape: Sequence[int]
) -> np.ndarray:
    """Leaf boundaries ``(N, D)`` on a reduced grid to level-0 boundaries: ``floor(g * scale + 0.5)`` per
    axis, the grid's end to the level-0 side. A monotone map of shared boundaries, so mapped leaves still
    tile and keep their order; the one place that maps grid (or level) coordinates to level 0."""
    bounds = np.asarray(bounds, dtype=np.int64)
    scale = np.asarray(scale, dtype=np.float64)
    grid_shape, shape = np.asarray(grid_shape, dtype=np.int64), np.asarray(shape, dtype=np.int64)
    out = np.floor(bounds * scale + 0.5).astype(np.int64)
    out = np.where(bounds >= grid_shape, shape, out)
    return np.minimum(out, shape)


def build_slide_forest(
    slide: Slide | str | os.PathLike,
    spec: ForestSpec | Mapping[str, Any] | int | None = None,
    band_rows: int = 1024,
    **options: Any,
) -> Forest:
    """Build the SHF forest of a whole slide in level-0 pixel coordinates.

    Args:
        slide: a :class:`~monai_shf.slide.Slide` or a slide path (opened and closed here).
        spec: the :class:`~monai_shf.forest.ForestSpec` (or a mapping of its options, or ``L``), with
            ``options`` (flat names) on top: exactly ``length`` tokens as
            :func:`~monai_shf.forest.build_forest`; ``max_side``/``forest_level`` choose the grid level
            (out of range: ``ValueError``); ``min_size`` and ``patch_size`` are in **level-0 pixels**
            (module docstring); ``edges`` the score map.
        band_rows: grid rows per edge band (memory).

    Returns:
        the :class:`~monai_shf.forest.Forest` over ``slide.shape``, leaves in Z-order.
    """
    spec = ForestSpec.create(spec, **options)
    with owned_slide(slide) as slide:
        if spec.min_size > max(slide.shape):
            raise ValueError(
                f"min_size ({spec.min_size}) is larger than every side of {slide.path}, shaped {slide.shape}."
            )
        edges, (sy, sx) = slide_edge_map(slide, spec, band_rows)
        grid_options = {"min_size": min(max(1, math.ceil(spec.min_size / min(sy, sx))), max(edges.shape))}
        if spec.patch_size is not None:
            # the token side caps splits in level-0 pixels: a grid leaf of g pixels spans g * s of them,
            # so g <= p / s (integer g: g <= floor(p / s)) is at the token's resolution already
            grid_options["patch_size"] = max(1, math.floor(spec.patch_size / max(sy, sx)))
        grid_forest = build_forest(edges, spec, **grid_options)
        del edges
        h, w = slide.shape
        starts, ends = grid_forest.starts, grid_forest.ends
        scale = np.array([sy, sx])
        level0_starts = grid_to_level0(starts, scale, grid_forest.spatial_shape, (h, w))
        level0_ends = grid_to_level0(ends, scale, grid_forest.spatial_shape, (h, w))
        return Forest(level0_starts, level0_ends - level0_starts, (h, w), grid_forest.length)
