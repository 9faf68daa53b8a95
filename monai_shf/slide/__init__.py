"""Whole-slide (gigapixel 2D) SHF: lazy pyramid reads, the forest from one level, tokens from the
level matching each leaf, and tile-by-tile masks. No MONAI import in the core (see DESIGN.md §7)."""

from .forest import build_slide_forest, forest_grid, slide_edge_map
from .metrics import slide_confusion, slide_dice
from .reader import DEFAULT_CACHE_BYTES, SLIDE_BACKENDS, Slide, TiffSlide, open_slide
from .tokens import leaf_levels, serialize_slide
from .writer import COMPRESSIONS, level_sample_index, pyramid_shapes, write_pyramid, write_slide_mask

__all__ = [
    "Slide",
    "TiffSlide",
    "open_slide",
    "build_slide_forest",
    "slide_edge_map",
    "forest_grid",
    "serialize_slide",
    "leaf_levels",
    "slide_dice",
    "slide_confusion",
    "SLIDE_BACKENDS",
    "DEFAULT_CACHE_BYTES",
    "write_pyramid",
    "write_slide_mask",
    "pyramid_shapes",
    "level_sample_index",
    "COMPRESSIONS",
]
