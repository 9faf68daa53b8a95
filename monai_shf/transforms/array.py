"""Array SHF transforms: ``EdgeMap``, ``HierarchicalPatch`` (invertible) and ``Depatch``.

Shapes: images ``(C, H, W)`` / ``(C, H, W, D)``; tokens ``(C, L, p, p)`` / ``(C, L, p, p, p)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, Transform
from monai.utils import TraceKeys, TransformBackends, convert_to_tensor

from monai_shf.enums import DeserializeMode, SerializeMode, look_up
from monai_shf.forest import EdgeSpec, Forest, ForestSpec, edge_forest, score_map
from monai_shf.validation import check_bool, check_int

from .functional import (
    check_spacing_option,
    depatch,
    forest_from_trace,
    hierarchical_patch,
    image_spacing,
    resolve_depatch_mode,
)

__all__ = ["EdgeMap", "HierarchicalPatch", "Depatch", "MaskPaddingTokens", "default_inverse_mode", "forest_spec"]


def forest_spec(
    spec: ForestSpec | Mapping[str, Any] | None, length: int | None, patch_size: int | None, **options: Any
) -> ForestSpec:
    """The patching transforms' spec: ``spec`` with ``length``/``patch_size`` (when given) and ``options``
    on top; the token side ``patch_size`` is required (a ``ValueError`` otherwise)."""
    if length is not None:
        options["length"] = length
    if patch_size is not None:
        options["patch_size"] = patch_size
    made = ForestSpec.create(spec, **options)
    if made.patch_size is None:
        raise ValueError("patch_size (the token side p) is required, as an argument or in spec.")
    return made


def default_inverse_mode(mode: str) -> str:
    """Depatching mode matching a serialisation mode: hard labels back by ``"nearest"``, the rest
    (images, soft labels, and so predictions of either) by ``"linear"``."""
    return "nearest" if mode == "nearest" else "linear"


class EdgeMap(Transform):
    """Edge map of a channel-first image: ``(C, *spatial) -> (1, *spatial)``, the forest's score map.

    Args:
        edges: an :class:`~monai_shf.forest.EdgeSpec` (or a mapping of its options), default soft edges.
        options: edge options set one by one (``edge_kind``, ``kernel_size``, ``thresholds``,
            ``channel_reduction``, ``edge_method``; see :class:`~monai_shf.forest.EdgeSpec`).

    ``edge_kind="soft"`` gives uint8 soft edges, 255 = one full edge pixel
    (:func:`monai_shf.forest.soft_edge_map`); ``"canny"`` the paper's bool Canny edges
    (:func:`monai_shf.forest.edge_map`, which documents the normalisation of any dtype and range).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, edges: EdgeSpec | Mapping[str, Any] | None = None, **options: Any) -> None:
        self.edges = ForestSpec.create({"length": 1, "edges": edges or {}}, **options).edges

    def __call__(self, img: Any) -> Any:
        edges = score_map(img, self.edges)
        out = edges[None]
        if isinstance(img, MetaTensor):
            return MetaTensor(convert_to_tensor(out, track_meta=False)).copy_meta_from(img, copy_attr=False)
        return out


class HierarchicalPatch(InvertibleTransform):
    """SHF patching of one image: ``(C, *spatial) -> (C', L, p, p[, p])`` tokens, invertible.

    Without an explicit ``forest`` the forest is built from the image's own score map. The forest is
    recorded in ``applied_operations``, so ``inverse`` (and MONAI's ``Invertd``) depatches tokens
    of any channel count back to ``(C', *spatial)``.

    Args:
        length: token budget ``L`` (or in ``spec``).
        patch_size: token side ``p`` (or in ``spec``; required).
        mode: ``"area"`` (images), ``"nearest"`` (hard labels) or ``"fraction"`` (soft labels, needs
            ``num_classes``); see :func:`monai_shf.forest.serialize`.
        inverse_mode: depatching mode, ``"linear"`` or ``"nearest"``; default from ``mode``.
        num_classes: ``K`` for ``mode="fraction"`` (required there).
        padding_value: value of padding tokens (e.g. a loss ``ignore_index`` for hard labels).
        inverse_argmax: the inverse (``Invertd``) returns ``(1, *spatial)`` class indices, the argmax
            of the depatched ``C >= 2`` scores, without a ``C x H x W`` float canvas (predictions that
            are only needed as labels).
        spacing: the voxel size, a property of each image (not a forest option): ``None`` (voxel-cube
            leaves), ``"meta"`` (read from the MetaTensor's affine, ``img.pixdim``) or the sizes per
            spatial axis, e.g. ``(1, 1, 5)``. Anisotropic: leaves are boxes near-cubic in millimetres
            (see :func:`~monai_shf.forest.build_forest`); still ``L`` tokens of ``p**D``.
        spec: the :class:`~monai_shf.forest.ForestSpec` (or a mapping of its options, e.g. a bundle's
            ``forest:`` entry).
        forest_options: forest and edge options set one by one on top of ``spec`` (``min_size``,
            ``criterion``, ``fill``, ``edge_kind``, ``kernel_size``, ``thresholds``, ...); an unknown
            name is a ``ValueError``.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        length: int | None = None,
        patch_size: int | None = None,
        mode: str = "area",
        inverse_mode: str | None = None,
        num_classes: int | None = None,
        padding_value: float = 0.0,
        inverse_argmax: bool = False,
        spec: ForestSpec | Mapping[str, Any] | None = None,
        spacing: Any = None,
        **forest_options: Any,
    ) -> None:
        self.spec = forest_spec(spec, length, patch_size, **forest_options)
        self.spacing = check_spacing_option(spacing)
        self.mode = look_up(mode, "mode", SerializeMode).value
        self.inverse_mode = look_up(inverse_mode or default_inverse_mode(mode), "inverse_mode", DeserializeMode).value
        self.num_classes = None if num_classes is None else check_int(num_classes, "num_classes", 1)
        if self.mode == "fraction" and self.num_classes is None:
            raise ValueError("num_classes is required for mode='fraction' (K class channels in every sample).")
        self.padding_value = float(padding_value)
        self.inverse_argmax = check_bool(inverse_argmax, "inverse_argmax")

    @property
    def length(self) -> int:
        return self.spec.length

    @property
    def patch_size(self) -> int:
        return self.spec.patch_size

    def build(self, img: Any, score: Any = None, spec: ForestSpec | None = None) -> Forest:
        """The forest of ``img`` ``(C, *spatial)`` (from ``score`` when given, else its score map) with
        the image's voxel spacing (the ``spacing`` option); ``spec`` replaces the transform's own for this
        call (e.g. edge parameters drawn per sample)."""
        spacing = image_spacing(img, self.spacing)
        return edge_forest(img, self.spec if spec is None else spec, score=score, spacing=spacing)

    def __call__(
        self,
        img: Any,
        forest: Forest | None = None,
        mode: str | None = None,
        inverse_mode: str | None = None,
        num_classes: int | None = None,
        padding_value: float | None = None,
        inverse_argmax: bool | None = None,
    ) -> torch.Tensor:
        """Patch ``img``; per-call arguments override the constructor's (``None`` keeps them)."""
        forest = self.build(img) if forest is None else forest
        mode = self.mode if mode is None else look_up(mode, "mode", SerializeMode).value
        if inverse_mode is None:
            inverse_mode = self.inverse_mode if mode == self.mode else default_inverse_mode(mode)
        inverse_mode = look_up(inverse_mode, "inverse_mode", DeserializeMode).value
        return hierarchical_patch(
            img,
            forest,
            self.patch_size,
            mode,
            inverse_mode,
            self.num_classes if num_classes is None else num_classes,
            self.padding_value if padding_value is None else float(padding_value),
            transform_info=self.get_transform_info(),
            inverse_argmax=self.inverse_argmax
            if inverse_argmax is None
            else check_bool(inverse_argmax, "inverse_argmax"),
        )

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        """Depatch ``(C', L, p, ...)`` tokens carrying this transform's record to ``(C', *spatial)``.

        The recorded mode is used, except that class maps go back by ``"nearest"``
        (see :func:`~monai_shf.transforms.resolve_depatch_mode`); with ``inverse_argmax`` recorded the
        result is ``(1, *spatial)`` class indices. As MONAI's inverses do, the record is popped from
        ``data``'s trace."""
        transform = self.pop_transform(data)
        info = transform[TraceKeys.EXTRA_INFO]
        mode = resolve_depatch_mode(data, None, info["mode"])
        return depatch(data, Forest.from_dict(info["forest"]), mode=mode, argmax=bool(info.get("argmax", False)))


class Depatch(Transform):
    """Explicit depatching: ``(C, L, p, ...)`` tokens to ``(C, *spatial)``.

    The forest comes from the call (``forest=``), or else from the most recent ``HierarchicalPatch``
    record in the tokens' ``applied_operations``: the output's trace lacks that record, the input's
    trace is left as it was. Unlike ``inverse``, this also works on a bare prediction when its forest
    is passed explicitly.

    Args:
        mode: ``"linear"`` (probabilities/logits) or ``"nearest"`` (hard labels). ``None`` (default)
            chooses per input: class maps (integer/bool tokens, or one-channel float tokens of
            integer values such as ``AsDiscrete(argmax=True)`` output) by ``"nearest"``, anything
            else by the mode recorded with the forest (``"linear"`` without one); see
            :func:`~monai_shf.transforms.resolve_depatch_mode`.
        argmax: return ``(1, *spatial)`` class indices (uint8 up to 256 classes): the argmax of the
            depatched ``C >= 2`` scores, without a ``C x H x W`` float canvas.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, mode: str | None = None, argmax: bool = False) -> None:
        self.mode = None if mode is None else look_up(mode, "mode", DeserializeMode).value
        self.argmax = check_bool(argmax, "argmax")

    def __call__(
        self, tokens: Any, forest: Forest | None = None, mode: str | None = None, argmax: bool | None = None
    ) -> torch.Tensor:
        """Depatch ``tokens``; ``mode`` and ``argmax`` override the constructor's for this call."""
        mode = self.mode if mode is None else look_up(mode, "mode", DeserializeMode).value
        argmax = self.argmax if argmax is None else check_bool(argmax, "argmax")
        recorded, consume = None, forest is None
        if forest is None:
            forest, info = forest_from_trace(tokens, latest=True)
            recorded = info.get("mode")
        mode = resolve_depatch_mode(tokens, mode, recorded)
        mode = look_up(mode, "mode", DeserializeMode).value
        return depatch(tokens, forest, mode=mode, consume_record=consume, argmax=argmax)


class MaskPaddingTokens(Transform):
    """Zero the padding tokens of ``(C, L, p, ...)`` tokens given the ``(L,)`` ``token_mask``.

    Before token-space metrics (e.g. ``MeanDice`` on one-hot tokens): an all-zero one-hot token is
    neither a true nor a false positive nor a false negative, so padding counts for nothing.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __call__(self, tokens: Any, token_mask: Any) -> Any:
        mask = convert_to_tensor(token_mask, track_meta=False).to(torch.bool)
        if mask.ndim != 1 or mask.shape[0] != tokens.shape[1]:
            raise ValueError(
                f"token_mask must be (L,) = ({tokens.shape[1]},) for tokens {tuple(tokens.shape)}, got {tuple(mask.shape)}."
            )
        t = convert_to_tensor(tokens)
        shape = (1, -1) + (1,) * (t.ndim - 2)
        return t * mask.to(t.device).view(shape).to(t.dtype)
