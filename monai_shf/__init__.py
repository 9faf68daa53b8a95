"""monai_shf: Symmetrical Hierarchical Forest patching for MONAI.

``monai_shf.forest`` is pure geometry (no MONAI import); ``monai_shf.transforms`` wraps it as MONAI
transforms. Import the subpackages you need.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
