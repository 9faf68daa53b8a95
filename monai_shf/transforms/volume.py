"""Out-of-core 3D SHF transforms: OME-Zarr store paths in a datalist, tokens out.

``VolumePatchd`` takes ``{"image": "a.zarr", "label": "a_label.zarr"}`` and produces exactly what
:class:`~monai_shf.transforms.HierarchicalPatchd` produces for the level-0 arrays of those stores (when the
forest level is level 0 and the pyramid levels are exact 2x means) — ``(C, L, p, p, p)`` token MetaTensors,
the side keys ``geom`` and ``token_mask``, and the forest record in ``applied_operations`` — without
holding a volume in memory: the forest comes from one pyramid level
(:func:`~monai_shf.volume.build_volume_forest`) and every token from the level that matches its leaf
(:func:`~monai_shf.volume.serialize_volume`). ``RandVolumePatchd`` draws the paper's edge parameters per
sample. ``Invertd`` works as for in-memory images (it rebuilds the full-resolution array: fine for small
volumes; large ones go through :func:`~monai_shf.volume.write_volume_mask`).

Token metadata: ``filename_or_obj`` (the store path), ``spatial_shape`` (level-0 ``(D, H, W)``),
``spacing`` (the store's level-0 voxel size) and an affine whose diagonal is that spacing in millimetres
(the store's unit is taken to be micrometres, NGFF's usual unit).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor

from monai_shf.forest import Forest
from monai_shf.validation import check_int
from monai_shf.volume import Volume, build_volume_forest, open_volume, serialize_volume

from .array import default_inverse_mode
from .dictionary import HierarchicalPatchd, RandHierarchicalPatchd
from .functional import record_patch

__all__ = ["VolumePatchd", "RandVolumePatchd", "volume_meta"]


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
    for a, s in enumerate(volume.spacing):
        affine[a, a] = s * 1e-3
    return {
        "filename_or_obj": volume.path,
        "spatial_shape": np.asarray(volume.shape, dtype=np.int64),
        "spacing": tuple(float(s) for s in volume.spacing),
        "affine": affine,
        "original_affine": affine.clone(),
    }


class _VolumeOptions:
    """The out-of-core options shared by :class:`VolumePatchd` and :class:`RandVolumePatchd`."""

    def __init__(
        self,
        keys: KeysCollection,
        length: int,
        patch_size: int,
        max_side: int = 256,
        forest_level: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, length, patch_size, **kwargs)
        if self.score_key is not None:
            raise TypeError(f"{type(self).__name__} takes no score_key: the forest comes from the volume's pyramid.")
        if self.patcher.edges.kind != "soft":
            raise ValueError(
                f"{type(self).__name__} computes soft edges only, got edge_kind={self.patcher.edges.kind!r}."
            )
        self.max_side = check_int(max_side, "max_side", 1)
        self.forest_level = None if forest_level is None else check_int(forest_level, "forest_level", 0)

    def forest(
        self, data: Mapping[Hashable, Any], kernel_size: int | None = None, thresholds: Sequence[float] | None = None
    ) -> Forest:
        """The forest of a sample in level-0 voxels, from one pyramid level of ``data[ref_key]``."""
        if self.ref_key not in data:
            raise ValueError(f"ref_key {self.ref_key!r} is not in the data (keys: {list(data)}).")
        patcher = self.patcher
        return build_volume_forest(
            open_volume(_volume_path(data[self.ref_key], self.ref_key)),
            patcher.length,
            max_side=self.max_side,
            forest_level=self.forest_level,
            kernel_size=patcher.edges.kernel_size if kernel_size is None else kernel_size,
            thresholds=patcher.edges.thresholds if thresholds is None else thresholds,
            min_size=patcher.min_size,
            fill=patcher.fill,
            channel_reduction=patcher.edges.channel_reduction,
            criterion=patcher.criterion,
            patch_size=patcher.patch_size,
        )

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
            tokens = serialize_volume(volume, forest, patcher.patch_size, mode=mode, num_classes=num_classes)
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
        length, patch_size, ref_key, mode, inverse_mode, num_classes, padding_value, kernel_size,
        thresholds, min_size, fill, channel_reduction, criterion, geom_key, token_mask_key, allow_missing_keys:
            as :class:`HierarchicalPatchd` (``min_size`` in level-0 voxels).
        max_side: the edge map comes from the finest level whose longest side is at most this.
        forest_level: or from this level.
    """


class RandVolumePatchd(_VolumeOptions, RandHierarchicalPatchd):
    """:class:`VolumePatchd` with the paper's random edge parameters per sample (training), arguments as
    :class:`RandHierarchicalPatchd` plus ``max_side`` and ``forest_level``."""
