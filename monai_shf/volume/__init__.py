"""Out-of-core 3D SHF over multiscale OME-Zarr volumes: lazy region reads, the octree from one level,
tokens from the level matching each leaf, and chunk-by-chunk NGFF label masks. No MONAI import."""

from .forest import VOLUME_MAX_SIDE, build_volume_forest, forest_level_of, volume_edge_map
from .reader import Volume, level_factor, open_volume
from .tokens import leaf_levels, serialize_volume
from .writer import multiscale_shapes, write_multiscale, write_volume_mask

__all__ = [
    "Volume",
    "open_volume",
    "level_factor",
    "build_volume_forest",
    "volume_edge_map",
    "forest_level_of",
    "VOLUME_MAX_SIDE",
    "serialize_volume",
    "leaf_levels",
    "write_multiscale",
    "write_volume_mask",
    "multiscale_shapes",
]
