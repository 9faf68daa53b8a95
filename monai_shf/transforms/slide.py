"""Whole-slide SHF transforms: slide paths in a datalist, tokens out, masks written as pyramids.

``SlidePatchd`` takes ``{"image": "a.svs", "label": "a_mask.tif"}`` and produces exactly what
:class:`~monai_shf.transforms.HierarchicalPatchd` produces for the level-0 arrays of those slides —
``(C, L, p, p)`` token MetaTensors, the side keys ``geom`` ``(L, 4)`` and ``token_mask`` ``(L,)``, and
the forest record in ``applied_operations`` — without ever holding a slide in memory: the forest comes
from one pyramid level (:func:`~monai_shf.slide.build_slide_forest`) and every token from the level that
matches its leaf (:func:`~monai_shf.slide.serialize_slide`). ``RandSlidePatchd`` draws the paper's edge
parameters per sample. ``SaveSlideMaskd`` writes a predicted ``(K, L, p, p)`` as a pyramidal mask beside
nothing else in memory (:func:`~monai_shf.slide.write_slide_mask`) and ``SlideDiced`` scores such a mask
against the label slide at full resolution, tile by tile.

Token metadata: ``filename_or_obj`` (the slide path), ``spatial_shape`` (level-0 ``(H, W)``), ``mpp``
(microns per pixel ``(y, x)`` or ``None``) and an affine whose spacing is the pixel size in millimetres.
``Invertd`` works as for in-memory images (it rebuilds the full-resolution ``(K, H, W)`` array: fine for
small slides and regions; whole slides go through ``SaveSlideMaskd``).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import ensure_tuple_rep

from monai_shf.forest import Forest, ForestSpec
from monai_shf.metrics import slide_file
from monai_shf.slide import Slide, build_slide_forest, open_slide, serialize_slide, slide_dice, write_slide_mask
from monai_shf.utils import file_stem
from monai_shf.validation import check_int, check_not_input

from .array import default_inverse_mode
from .dictionary import HierarchicalPatchd, RandHierarchicalPatchd
from .functional import forest_from_trace, patch_record_index, record_patch

__all__ = [
    "SlidePatchd",
    "RandSlidePatchd",
    "SaveSlideMaskd",
    "SlideDiced",
    "SlidePatchD",
    "SlidePatchDict",
    "RandSlidePatchD",
    "RandSlidePatchDict",
    "SaveSlideMaskD",
    "SaveSlideMaskDict",
    "SlideDiceD",
    "SlideDiceDict",
    "slide_meta",
]


def slide_meta(slide: Slide) -> dict[str, Any]:
    """MONAI metadata of a slide's tokens: path, level-0 shape, microns per pixel and an affine whose
    spacing is the level-0 pixel size in millimetres (identity when the file states no resolution)."""
    affine = torch.eye(3, dtype=torch.float64)
    if slide.mpp is not None:
        affine[0, 0], affine[1, 1] = slide.mpp[0] * 1e-3, slide.mpp[1] * 1e-3
    return {
        "filename_or_obj": os.fspath(slide.path),
        "spatial_shape": np.asarray(slide.shape, dtype=np.int64),
        "mpp": None if slide.mpp is None else tuple(float(v) for v in slide.mpp),
        "affine": affine,
        "original_affine": affine.clone(),
    }


class _SlideOptions:
    """The whole-slide options shared by :class:`SlidePatchd` and :class:`RandSlidePatchd`."""

    def __init__(self, keys: KeysCollection, *args: Any, backend: str = "auto", **kwargs: Any) -> None:
        # the patcher's own constructor (HierarchicalPatchd or RandHierarchicalPatchd, next in the MRO)
        super().__init__(keys, *args, **kwargs)
        if self.score_key is not None:
            raise TypeError(f"{type(self).__name__} takes no score_key: the forest comes from the slide's own pyramid.")
        self.reader_backend = backend

    def forest(self, data: Mapping[Hashable, Any], spec: ForestSpec | None = None) -> Forest:
        """The forest of a sample in level-0 pixels, from one pyramid level of ``data[ref_key]``."""
        if self.ref_key not in data:
            raise ValueError(f"ref_key {self.ref_key!r} is not in the data (keys: {list(data)}).")
        with open_slide(
            slide_file(data[self.ref_key], f"data[{self.ref_key!r}]"), backend=self.reader_backend
        ) as slide:
            return build_slide_forest(slide, self.spec if spec is None else spec)

    def patch(self, data: Mapping[Hashable, Any], forest: Forest) -> dict[Hashable, Any]:
        """Serialise every key's slide with ``forest`` (level-0 pixels) and add the side keys."""
        d = dict(data)
        patcher = self.patcher
        for key, mode, inverse_mode, num_classes, padding_value, inverse_argmax in self.key_iterator(
            d, self.mode, self.inverse_mode, self.num_classes, self.padding_value, self.inverse_argmax
        ):
            with open_slide(slide_file(d[key], f"data[{key!r}]"), backend=self.reader_backend) as slide:
                if tuple(slide.shape) != forest.spatial_shape:
                    raise ValueError(
                        f"slide {slide.path} ({key!r}) has level-0 shape {tuple(slide.shape)} but the forest (from "
                        f"{self.ref_key!r}) covers {forest.spatial_shape}: every key's slide must have the same size."
                    )
                tokens = serialize_slide(slide, forest, patcher.patch_size, mode=mode, num_classes=num_classes)
                source = MetaTensor(torch.empty(0), meta=slide_meta(slide))
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


class SlidePatchd(_SlideOptions, HierarchicalPatchd):
    """SHF patching of whole slides named by path: the output of :class:`HierarchicalPatchd` on their
    level-0 arrays, read from the pyramid (see the module docstring).

    Args:
        keys: keys holding slide paths (image, label, ...), all slides of one sample of the same
            level-0 size.
        length, patch_size, ref_key, mode, inverse_mode, num_classes, padding_value, geom_key,
        token_mask_key, allow_missing_keys, inverse_argmax, spec, forest_options:
            as :class:`HierarchicalPatchd` (``min_size`` in level-0 pixels; label slides use
            ``"fraction"`` with ``num_classes`` or ``"nearest"``); the spec's ``max_side`` and
            ``forest_level`` choose the pyramid level of the score map.
        backend: slide reader backend of :func:`~monai_shf.slide.open_slide` (stored as ``reader_backend``:
            ``backend`` is MONAI's transform attribute).
    """


class RandSlidePatchd(_SlideOptions, RandHierarchicalPatchd):
    """:class:`SlidePatchd` with the paper's random edge parameters per sample (training), seeded
    through ``set_random_state`` like :class:`RandHierarchicalPatchd`, whose arguments it takes
    (``kernel_sizes``, ``low_range``, ``threshold_gap``), plus ``backend``."""


def _forest_and_source(d: Mapping[Hashable, Any], key: Hashable, ref_key: str | None) -> tuple[Forest, str]:
    """The forest of ``d[key]`` (its own patch record, else ``ref_key``'s) and the source slide path."""
    tokens = d[key]
    holder = tokens if patch_record_index(tokens) is not None else d.get(ref_key) if ref_key is not None else None
    if holder is None or patch_record_index(holder) is None:
        raise ValueError(f"data[{key!r}] carries no patch record and ref_key {ref_key!r} holds none either.")
    forest, _ = forest_from_trace(holder)
    source = holder.meta.get("filename_or_obj") if isinstance(holder, MetaTensor) else None
    if not source:
        raise ValueError(f"the patch record of {key!r} names no source slide (meta 'filename_or_obj').")
    return forest, os.fspath(source)


class SaveSlideMaskd(MapTransform):
    """Write each predicted ``(K, L, p, p)`` (scores: argmax labels) or ``(1, L, p, p)`` (integer labels)
    as a tiled pyramidal mask TIFF of the source slide, tile by tile (never a full-resolution array).

    The forest and the source slide come from the key's own patch record, else from ``ref_key``'s
    (e.g. the prediction of ``SupervisedEvaluator`` after ``decollate_batch``). The mask is written to
    ``output_dir/<slide stem><output_postfix>.tif`` with the slide's size and resolution, and its path is
    stored under ``path_key`` (``"<key>_path"`` by default) for :class:`SlideDiced`. The stem is the
    whole file name less its format suffix (:func:`monai_shf.utils.file_stem`: ``case.v1.tif`` ->
    ``case.v1``, ``a.ome.tif`` -> ``a``).

    Never overwrites an input or another sample's mask: an output that is one of the sample's files
    (the slide, a label slide named in ``data``; the same path or a link) is a ``ValueError``, and so is
    a second write of one output name for another slide or key by this transform (slides of one name
    in two folders: give each folder its own ``output_dir`` or ``output_postfix``). Writing the same
    slide and key again (the next validation round) replaces its own mask.

    Args:
        keys: prediction keys.
        output_dir: folder of the masks (must exist or be creatable).
        ref_key: key whose trace holds the forest when the prediction has none.
        output_postfix: appended to the slide's file stem.
        probabilities: write uint8-quantised probabilities instead of labels (see ``write_slide_mask``).
        tile: tile side of the mask.
        path_key: where to store the written path (``None``: ``"<key>_path"``).
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        ref_key: str | None = "image",
        output_postfix: str = "_mask",
        probabilities: bool = False,
        tile: int = 512,
        path_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = Path(output_dir)
        self.ref_key, self.output_postfix = ref_key, str(output_postfix)
        self.probabilities, self.tile = bool(probabilities), check_int(tile, "tile", 16)
        self.path_keys = ensure_tuple_rep(path_key, len(self.keys))
        self._written: dict[str, tuple[str, Hashable]] = {}  # output path -> (source slide, key)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        inputs = _input_files(d)
        for key, path_key in self.key_iterator(d, self.path_keys):
            forest, source = _forest_and_source(d, key, self.ref_key)
            path = self.output_dir / (file_stem(source) + self.output_postfix + ".tif")
            check_not_input(path, [source, *inputs], f"the mask of {key!r}")
            where = os.path.realpath(path)
            owner = self._written.get(where)
            if owner is not None and (os.path.realpath(owner[0]) != os.path.realpath(source) or owner[1] != key):
                raise ValueError(
                    f"SaveSlideMaskd would write {str(path)!r} for slide {source!r} ({key!r}), the mask it wrote "
                    f"for {owner[0]!r} ({owner[1]!r}): slides of one name need their own output_dir or output_postfix."
                )
            pred = d[key]
            pred = pred.detach().as_tensor() if isinstance(pred, MetaTensor) else pred
            out = write_slide_mask(path, forest, pred, like=source, tile=self.tile, probabilities=self.probabilities)
            self._written[where] = (source, key)
            d[path_key or f"{key}_path"] = str(out)
        return d


def _input_files(data: Mapping[Hashable, Any]) -> list[str]:
    """The files a sample names: path values (and lists of them), open slides and the source files
    of MetaTensors."""
    found: list[str] = []
    for value in data.values():
        for v in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(v, MetaTensor):
                v = v.meta.get("filename_or_obj")
            elif isinstance(v, Slide):
                v = v.path
            if isinstance(v, (str, os.PathLike)) and v:
                found.append(os.fspath(v))
    return found


class SlideDiced(MapTransform):
    """The transform form of :class:`~monai_shf.metrics.SlideDiceMetric` (the primary API, an evaluator's
    metric): full-resolution per-class Dice of written masks against label slides, tile by tile, stored as
    a ``(K,)`` float tensor under ``output_key``, for pipelines that score samples outside an engine.

    Args:
        keys: keys holding mask paths (as :class:`SaveSlideMaskd` stores them).
        label_key: key of the label: a slide path, or tokens made by :class:`SlidePatchd` (their
            ``filename_or_obj`` names the label slide).
        num_classes: ``K``.
        output_key: where to store the Dice (``"<key>_dice"`` when ``None``).
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str = "label",
        num_classes: int = 2,
        output_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_key, self.num_classes = label_key, check_int(num_classes, "num_classes", 1)
        self.output_keys = ensure_tuple_rep(output_key, len(self.keys))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.label_key not in d:
            raise ValueError(f"label_key {self.label_key!r} is not in the data (keys: {list(d)}).")
        label = slide_file(d[self.label_key], f"data[{self.label_key!r}]")
        for key, out_key in self.key_iterator(d, self.output_keys):
            mask = slide_file(d[key], f"data[{key!r}]")
            dice = slide_dice(mask, label, self.num_classes)  # what SlideDiceMetric computes per pair
            d[out_key or f"{key}_dice"] = torch.as_tensor(dice, dtype=torch.float32)
        return d


SlidePatchD = SlidePatchDict = SlidePatchd
RandSlidePatchD = RandSlidePatchDict = RandSlidePatchd
SaveSlideMaskD = SaveSlideMaskDict = SaveSlideMaskd
SlideDiceD = SlideDiceDict = SlideDiced
