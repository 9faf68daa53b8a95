"""Out-of-core 3D SHF transforms: OME-Zarr store paths in a datalist, tokens out.

``VolumePatchd`` takes ``{"image": "a.zarr", "label": "a_label.zarr"}`` and produces exactly what
:class:`~monai_shf.transforms.HierarchicalPatchd` produces for the level-0 arrays of those stores (when
the score map comes from level 0 and the pyramid levels are exact 2x means; label keys are always read
at level 0): ``(C, L, p, p, p)`` token MetaTensors, the side keys ``geom`` and ``token_mask``, and the
forest record in ``applied_operations``, without holding a volume in memory: the forest comes from one
pyramid level (:func:`~monai_shf.volume.build_volume_forest`) and every image token from the level that
matches its leaf (:func:`~monai_shf.volume.serialize_volume`). ``RandVolumePatchd`` draws the paper's
edge parameters per sample. The transforms hold store paths only (each call opens the stores), so
DataLoader workers need nothing shared. ``Invertd`` works as for in-memory images (it rebuilds the
full-resolution array: fine for small volumes; large ones go through
:func:`~monai_shf.volume.write_volume_mask`).

Token metadata: ``filename_or_obj`` (the store path), ``spatial_shape`` (level-0 ``(D, H, W)``),
``spacing`` (the store's level-0 voxel size, in its unit) and an affine whose diagonal is that spacing
in millimetres (:attr:`~monai_shf.volume.Volume.unit`; micrometres, NGFF's usual unit, when the store
names none).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor

from monai_shf.forest import Forest, ForestSpec
from monai_shf.volume import Volume, build_volume_forest, open_volume, serialize_volume

from .array import default_inverse_mode
from .dictionary import HierarchicalPatchd, RandHierarchicalPatchd
from .functional import record_patch

__all__ = [
    "VolumePatchd",
    "RandVolumePatchd",
    "VolumePatchD",
    "VolumePatchDict",
    "RandVolumePatchD",
    "RandVolumePatchDict",
    "volume_meta",
]


# NGFF space units in millimetres (the affine's unit)
_UNIT_MM = {"meter": 1e3, "centimeter": 10.0, "millimeter": 1.0, "micrometer": 1e-3, "nanometer": 1e-6}


def _volume_path(value: Any, key: Hashable) -> str:
    if isinstance(value, Volume):
        return value.path
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"data[{key!r}] must be an OME-Zarr store path (or an open Volume), got {type(value).__name__}."
        )
    return os.fspath(value)


def volume_meta(volume: Volume) -> dict[str, Any]:
    """MONAI metadata of a volume's tokens: path, level-0 shape, spacing and an affine whose diagonal is
    the level-0 voxel size in millimetres."""
    affine = torch.eye(4, dtype=torch.float64)
    to_mm = _UNIT_MM.get(volume.unit, 1e-3)
    for a, s in enumerate(volume.spacing):
        affine[a, a] = s * to_mm
    return {
        "filename_or_obj": volume.path,
        "spatial_shape": np.asarray(volume.shape, dtype=np.int64),
        "spacing": tuple(float(s) for s in volume.spacing),
        "affine": affine,
        "original_affine": affine.clone(),
    }


class _VolumeOptions:
    """The out-of-core options shared by :class:`VolumePatchd` and :class:`RandVolumePatchd`."""

    def __init__(self, keys: KeysCollection, *args: Any, **kwargs: Any) -> None:
        # the patcher's own constructor (HierarchicalPatchd or RandHierarchicalPatchd, next in the MRO)
        super().__init__(keys, *args, **kwargs)
        if self.score_key is not None:
            raise TypeError(f"{type(self).__name__} takes no score_key: the forest comes from the volume's pyramid.")

    def forest(self, data: Mapping[Hashable, Any], spec: ForestSpec | None = None) -> Forest:
        """The forest of a sample in level-0 voxels, from one pyramid level of ``data[ref_key]``."""
        if self.ref_key not in data:
            raise ValueError(f"ref_key {self.ref_key!r} is not in the data (keys: {list(data)}).")
        volume = open_volume(_volume_path(data[self.ref_key], self.ref_key))
        return build_volume_forest(volume, self.spec if spec is None else spec)

    def patch(self, data: Mapping[Hashable, Any], forest: Forest) -> dict[Hashable, Any]:
        """Serialise every key's volume with ``forest`` (level-0 voxels) and add the side keys."""
        d = dict(data)
        patcher = self.patcher
        for key, mode, inverse_mode, num_classes, padding_value, inverse_argmax in self.key_iterator(
            d, self.mode, self.inverse_mode, self.num_classes, self.padding_value, self.inverse_argmax
        ):
            volume = open_volume(_volume_path(d[key], key))
            if tuple(volume.shape) != forest.spatial_shape:
                raise ValueError(
                    f"store {volume.path} ({key!r}) has level-0 shape {tuple(volume.shape)} but the forest (from "
                    f"{self.ref_key!r}) covers {forest.spatial_shape}: every key's store must have the same shape."
                )
            # class maps ("nearest", "fraction") are read at level 0: a coarser label level would change them
            max_level = None if mode == "area" else 0
            tokens = serialize_volume(
                volume, forest, patcher.patch_size, mode=mode, num_classes=num_classes, max_level=max_level
            )
            source = MetaTensor(torch.empty(0), meta=volume_meta(volume))
            if inverse_mode is None:
                inverse_mode = patcher.inverse_mode if mode == patcher.mode else default_inverse_mode(mode)
            d[key] = record_patch(
                source,
                torch.from_numpy(tokens),
                forest,
                patcher.patch_size,
                mode,
                inverse_mode,
                float(padding_value),
                transform_info=patcher.get_transform_info(),
                inverse_argmax=bool(inverse_argmax),
            )
        return self.add_side_keys(d, forest)


class VolumePatchd(_VolumeOptions, HierarchicalPatchd):
    """SHF patching of OME-Zarr volumes named by path: the output of :class:`HierarchicalPatchd` on their
    level-0 arrays, read from the pyramid (see the module docstring).

    Args:
        keys: keys holding store paths (image, label, ...), all of one level-0 shape.
        length, patch_size, ref_key, mode, inverse_mode, num_classes, padding_value, geom_key,
        token_mask_key, allow_missing_keys, inverse_argmax, spec, forest_options:
            as :class:`HierarchicalPatchd` (``min_size`` in level-0 voxels; label stores use
            ``"fraction"`` with ``num_classes`` or ``"nearest"``, read at level 0); the spec's
            ``max_side`` and ``forest_level`` choose the pyramid level of the score map (pass a
            volume-sized ``max_side`` such as :data:`~monai_shf.volume.VOLUME_MAX_SIDE` for large volumes).
    """


class RandVolumePatchd(_VolumeOptions, RandHierarchicalPatchd):
    """:class:`VolumePatchd` with the paper's random edge parameters per sample (training), seeded
    through ``set_random_state`` like :class:`RandHierarchicalPatchd`, whose arguments it takes
    (``kernel_sizes``, ``low_range``, ``threshold_gap``)."""


VolumePatchD = VolumePatchDict = VolumePatchd
RandVolumePatchD = RandVolumePatchDict = RandVolumePatchd
