"""MONAI transforms for SHF patching (array, dictionary and functional layers)."""

from .array import Depatch, EdgeMap, HierarchicalPatch, MaskPaddingTokens, default_inverse_mode
from .dicom import SaveDicomSegD, SaveDicomSegd, SaveDicomSegDict
from .dictionary import (
    DepatchD,
    Depatchd,
    DepatchDict,
    EdgeMapD,
    EdgeMapd,
    EdgeMapDict,
    HierarchicalPatchD,
    HierarchicalPatchd,
    HierarchicalPatchDict,
    MaskPaddingTokensd,
    RandHierarchicalPatchD,
    RandHierarchicalPatchd,
    RandHierarchicalPatchDict,
)
from .functional import depatch, edge_forest, forest_from_trace, hierarchical_patch, resolve_depatch_mode

__all__ = [
    "EdgeMap",
    "HierarchicalPatch",
    "Depatch",
    "EdgeMapd",
    "HierarchicalPatchd",
    "RandHierarchicalPatchd",
    "Depatchd",
    "MaskPaddingTokens",
    "MaskPaddingTokensd",
    "EdgeMapD",
    "EdgeMapDict",
    "HierarchicalPatchD",
    "HierarchicalPatchDict",
    "RandHierarchicalPatchD",
    "RandHierarchicalPatchDict",
    "DepatchD",
    "DepatchDict",
    "SaveDicomSegd",
    "SaveDicomSegD",
    "SaveDicomSegDict",
    "default_inverse_mode",
    "edge_forest",
    "hierarchical_patch",
    "depatch",
    "forest_from_trace",
    "resolve_depatch_mode",
]
