"""Pure geometry of SHF patching (numpy/torch/OpenCV/ITK, never MONAI)."""

from .edges import canny_bands, edge_map, score_map, soft_edge_bands, soft_edge_map, to_uint8
from .resample import (
    DESERIALIZE_MODES,
    SERIALIZE_MODES,
    deserialize,
    label_dtype,
    nearest_index,
    resample_matrix,
    serialize,
)
from .spec import (
    CHANNEL_REDUCTIONS,
    EDGE_KINDS,
    EDGE_METHODS,
    EDGE_OPTIONS,
    FILL_MODES,
    FOREST_OPTIONS,
    RENAMED_OPTIONS,
    SPLIT_CRITERIA,
    EdgeSpec,
    ForestSpec,
    check_edge_args,
)
from .torch_edges import soft_edge_maps
from .torch_forest import build_forests
from .tree import Forest, build_forest, edge_forest

__all__ = [
    "Forest",
    "ForestSpec",
    "EdgeSpec",
    "build_forest",
    "build_forests",
    "edge_forest",
    "serialize",
    "deserialize",
    "label_dtype",
    "resample_matrix",
    "nearest_index",
    "score_map",
    "edge_map",
    "soft_edge_map",
    "soft_edge_maps",
    "soft_edge_bands",
    "canny_bands",
    "to_uint8",
    "check_edge_args",
    "FOREST_OPTIONS",
    "EDGE_OPTIONS",
    "RENAMED_OPTIONS",
    "FILL_MODES",
    "SPLIT_CRITERIA",
    "SERIALIZE_MODES",
    "DESERIALIZE_MODES",
    "EDGE_METHODS",
    "EDGE_KINDS",
    "CHANNEL_REDUCTIONS",
]
