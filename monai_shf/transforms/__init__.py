"""MONAI transforms for SHF patching (array, dictionary and functional layers)."""

from .array import Depatch, EdgeMap, HierarchicalPatch, MaskPaddingTokens, default_inverse_mode, forest_spec
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
    MaskPaddingTokensD,
    MaskPaddingTokensd,
    MaskPaddingTokensDict,
    RandHierarchicalPatchD,
    RandHierarchicalPatchd,
    RandHierarchicalPatchDict,
)
from .functional import depatch, forest_from_trace, hierarchical_patch, resolve_depatch_mode

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
    "MaskPaddingTokensD",
    "MaskPaddingTokensDict",
    "SaveDicomSegd",
    "SaveDicomSegD",
    "SaveDicomSegDict",
    "default_inverse_mode",
    "forest_spec",
    "hierarchical_patch",
    "depatch",
    "forest_from_trace",
    "resolve_depatch_mode",
]
