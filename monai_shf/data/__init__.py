"""Embedded datasets (synthetic generators, written to a bundle's dataset_dir on first run),
real-data datalists (JSON loading, folder-layout makers, header checks before training), a
MONAI reader for large 2D TIFF images, and the per-rank split of a datalist in distributed runs."""

from .datalist import (
    check_datalist,
    ensure_synthetic_2d,
    ensure_synthetic_3d,
    ensure_synthetic_slides,
    image_header,
    load_datalist,
    make_datalist,
)
from .distributed import rank_partition
from .readers import TIFF_SUFFIXES, TiffReader
from .synthetic import synthetic_organs_3d, synthetic_tissue_2d
from .synthetic_slides import SLIDE_CLASSES, make_slide
from .volumes import VOLUME_CLASSES, make_volume

__all__ = [
    "synthetic_tissue_2d",
    "synthetic_organs_3d",
    "make_slide",
    "SLIDE_CLASSES",
    "make_volume",
    "VOLUME_CLASSES",
    "ensure_synthetic_2d",
    "ensure_synthetic_3d",
    "ensure_synthetic_slides",
    "load_datalist",
    "check_datalist",
    "image_header",
    "make_datalist",
    "rank_partition",
    "TiffReader",
    "TIFF_SUFFIXES",
]
