"""Pure geometry of SHF patching (numpy/torch/OpenCV/ITK, never MONAI)."""

from .edges import edge_map
from .resample import deserialize, serialize
from .tree import FILL_MODES, Forest, build_forest

__all__ = ["Forest", "build_forest", "serialize", "deserialize", "edge_map", "FILL_MODES"]
