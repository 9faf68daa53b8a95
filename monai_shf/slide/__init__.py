"""Whole-slide (gigapixel 2D) SHF: lazy pyramid reads, the forest from one level, tokens from the
level matching each leaf, and tile-by-tile masks.

Layout (dependencies point one way): :mod:`~monai_shf.slide.base` (the :class:`Slide` interface) <-
:mod:`~monai_shf.slide.tiff_backend` / :mod:`~monai_shf.slide.wsi_backend` (backends) <-
:mod:`~monai_shf.slide.reader` (:func:`open_slide`, :func:`owned_slide`) <- forest, tokens, writer,
metrics. No MONAI import in the core (only the OpenSlide / cuCIM backend imports it, when used)."""

from .annotations import mask_to_geojson, trace_polygons
from .base import MAX_SLIDE_PIXELS, Slide
from .classes import normalize_classes, read_class_record
from .forest import build_slide_forest, forest_grid, slide_edge_map
from .metrics import slide_confusion, slide_dice
from .reader import SLIDE_BACKENDS, open_slide, owned_slide
from .tiff_backend import DEFAULT_CACHE_BYTES, MAX_TILE_BYTES, TiffSlide
from .tokens import leaf_levels, serialize_slide
from .writer import COMPRESSIONS, level_sample_index, pyramid_shapes, write_pyramid, write_slide_mask

__all__ = [
    "Slide",
    "TiffSlide",
    "open_slide",
    "owned_slide",
    "build_slide_forest",
    "slide_edge_map",
    "forest_grid",
    "serialize_slide",
    "leaf_levels",
    "slide_dice",
    "slide_confusion",
    "SLIDE_BACKENDS",
    "DEFAULT_CACHE_BYTES",
    "MAX_SLIDE_PIXELS",
    "MAX_TILE_BYTES",
    "write_pyramid",
    "write_slide_mask",
    "pyramid_shapes",
    "level_sample_index",
    "COMPRESSIONS",
    "mask_to_geojson",
    "trace_polygons",
    "normalize_classes",
    "read_class_record",
]
