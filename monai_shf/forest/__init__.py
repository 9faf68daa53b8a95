"""Pure geometry of SHF patching (numpy/torch/OpenCV/ITK, never MONAI)."""

from .edges import (
    CHANNEL_REDUCTIONS,
    EDGE_KINDS,
    EDGE_METHODS,
    canny_bands,
    check_edge_args,
    edge_map,
    score_map,
    soft_edge_bands,
    soft_edge_map,
    to_uint8,
)
from .resample import (
    DESERIALIZE_MODES,
    SERIALIZE_MODES,
    deserialize,
    label_dtype,
    nearest_index,
    resample_matrix,
    serialize,
)
from .tree import FILL_MODES, SPLIT_CRITERIA, Forest, build_forest, check_fill

__all__ = [
    "Forest",
    "build_forest",
    "serialize",
    "deserialize",
    "label_dtype",
    "resample_matrix",
    "nearest_index",
    "score_map",
    "edge_map",
    "soft_edge_map",
    "soft_edge_bands",
    "canny_bands",
    "to_uint8",
    "check_edge_args",
    "check_fill",
    "FILL_MODES",
    "SPLIT_CRITERIA",
    "SERIALIZE_MODES",
    "DESERIALIZE_MODES",
    "EDGE_METHODS",
    "EDGE_KINDS",
    "CHANNEL_REDUCTIONS",
]
