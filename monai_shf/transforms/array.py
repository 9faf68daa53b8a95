"""Array SHF transforms: ``EdgeMap``, ``HierarchicalPatch`` (invertible) and ``Depatch``.

Shapes: images ``(C, H, W)`` / ``(C, H, W, D)``; tokens ``(C, L, p, p)`` / ``(C, L, p, p, p)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, Transform
from monai.utils import TraceKeys, TransformBackends, convert_to_tensor

from monai_shf.forest import (
    CHANNEL_REDUCTIONS,
    DESERIALIZE_MODES,
    EDGE_KINDS,
    EDGE_METHODS,
    SERIALIZE_MODES,
    SPLIT_CRITERIA,
    Forest,
    check_edge_args,
    check_fill,
    score_map,
)
from monai_shf.validation import check_bool, check_choice, check_int

from .functional import depatch, edge_forest, forest_from_trace, hierarchical_patch, resolve_depatch_mode

__all__ = ["EdgeMap", "HierarchicalPatch", "Depatch", "MaskPaddingTokens", "default_inverse_mode"]


def default_inverse_mode(mode: str) -> str:
    """Depatching mode matching a serialisation mode: hard labels back by ``"nearest"``, the rest
    (images, soft labels, and so predictions of either) by ``"linear"``."""
    return "nearest" if mode == "nearest" else "linear"


class EdgeMap(Transform):
    """Edge map of a channel-first image: ``(C, *spatial) -> (1, *spatial)``, the forest's score map.

    Args:
        kernel_size: odd Gaussian kernel side (1 = no blur); default 3.
        thresholds: Canny ``(low, high)`` on the 8-bit scale; default ``(50, 100)``. Soft edges
            saturate at ``low / 8`` grey levels per pixel.
        channel_reduction: ``"max"`` (the channel with the largest gradient) or ``"mean"``.
        method: 3D Canny operator, ``"itk"`` (N-D Canny) or ``"slicewise"`` (``kind="canny"`` only).
        kind: ``"soft"`` (default): uint8 soft edges, 255 = one full edge pixel
            (:func:`monai_shf.forest.soft_edge_map`); ``"canny"``: the paper's bool Canny edges
            (:func:`monai_shf.forest.edge_map`).

    See :func:`monai_shf.forest.edge_map` for the normalisation of any dtype and range.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        kernel_size: int = 3,
        thresholds: Sequence[float] = (50, 100),
        channel_reduction: str = "max",
        method: str = "itk",
        kind: str = "soft",
    ) -> None:
        check_edge_args(kernel_size, thresholds)
        self.kernel_size, self.thresholds = int(kernel_size), tuple(float(t) for t in thresholds)
        self.channel_reduction = check_choice(channel_reduction, "channel_reduction", CHANNEL_REDUCTIONS)
        self.method = check_choice(method, "method", EDGE_METHODS)
        self.kind = check_choice(kind, "kind", EDGE_KINDS)

    def __call__(self, img: Any) -> Any:
        edges = score_map(img, self.kind, self.kernel_size, self.thresholds, self.channel_reduction, self.method)
        out = edges[None]
        if isinstance(img, MetaTensor):
            return MetaTensor(convert_to_tensor(out, track_meta=False)).copy_meta_from(img, copy_attr=False)
        return out


class HierarchicalPatch(InvertibleTransform):
    """SHF patching of one image: ``(C, *spatial) -> (C', L, p, p[, p])`` tokens, invertible.

    Without an explicit ``forest`` the forest is built from the image's own edge map. The forest is
    recorded in ``applied_operations``, so ``inverse`` (and MONAI's ``Invertd``) depatches tokens
    of any channel count back to ``(C', *spatial)``.

    Args:
        length: token budget ``L``.
        patch_size: token side ``p``.
        mode: ``"area"`` (images), ``"nearest"`` (hard labels) or ``"fraction"`` (soft labels, needs
            ``num_classes``); see :func:`monai_shf.forest.serialize`.
        inverse_mode: depatching mode, ``"linear"`` or ``"nearest"``; default from ``mode``.
        num_classes: ``K`` for ``mode="fraction"`` (required there).
        padding_value: value of padding tokens (e.g. a loss ``ignore_index`` for hard labels).
        kernel_size, thresholds, channel_reduction, edge_method: the edge map (see :class:`EdgeMap`).
        edge_kind: ``"soft"`` (default) or ``"canny"`` (the paper's), :class:`EdgeMap`'s ``kind``.
        min_size, fill: forest build (see :func:`monai_shf.forest.build_forest`).
        criterion: split priority of the forest build, one of ``SPLIT_CRITERIA``: ``"error"``
            (default: expected depatching error at this ``patch_size``) or ``"edges"`` (the paper's
            edge count); see :func:`monai_shf.forest.build_forest`.
        inverse_argmax: the inverse (``Invertd``) returns ``(1, *spatial)`` class indices, the argmax
            of the depatched ``C >= 2`` scores, without a ``C x H x W`` float canvas (predictions that
            are only needed as labels).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        length: int,
        patch_size: int,
        mode: str = "area",
        inverse_mode: str | None = None,
        num_classes: int | None = None,
        padding_value: float = 0.0,
        kernel_size: int = 3,
        thresholds: Sequence[float] = (50, 100),
        min_size: int = 2,
        fill: str = "uniform",
        channel_reduction: str = "max",
        edge_method: str = "itk",
        criterion: str = "error",
        inverse_argmax: bool = False,
        edge_kind: str = "soft",
    ) -> None:
        self.length = check_int(length, "length", 1)
        self.patch_size = check_int(patch_size, "patch_size", 1)
        self.min_size = check_int(min_size, "min_size", 1)
        self.mode = check_choice(mode, "mode", SERIALIZE_MODES)
        self.inverse_mode = check_choice(inverse_mode or default_inverse_mode(mode), "inverse_mode", DESERIALIZE_MODES)
        self.num_classes = None if num_classes is None else check_int(num_classes, "num_classes", 1)
        if self.mode == "fraction" and self.num_classes is None:
            raise ValueError("num_classes is required for mode='fraction' (K class channels in every sample).")
        self.padding_value = float(padding_value)
        self.edges = EdgeMap(
            kernel_size, thresholds, channel_reduction, edge_method, check_choice(edge_kind, "edge_kind", EDGE_KINDS)
        )
        self.fill = check_fill(fill)
        self.criterion = check_choice(criterion, "criterion", SPLIT_CRITERIA)
        self.inverse_argmax = check_bool(inverse_argmax, "inverse_argmax")

    def build(
        self, img: Any, score: Any = None, kernel_size: int | None = None, thresholds: Sequence[float] | None = None
    ) -> Forest:
        """The forest of ``img`` ``(C, *spatial)`` (from ``score`` when given, else its edge map);
        ``kernel_size``/``thresholds`` override the constructor's edge parameters for this call."""
        return edge_forest(
            img,
            self.length,
            self.edges.kernel_size if kernel_size is None else kernel_size,
            self.edges.thresholds if thresholds is None else thresholds,
            self.min_size,
            self.fill,
            self.edges.channel_reduction,
            self.edges.method,
            score=score,
            criterion=self.criterion,
            patch_size=self.patch_size,
            edge_kind=self.edges.kind,
        )

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
        mode = self.mode if mode is None else check_choice(mode, "mode", SERIALIZE_MODES)
        if inverse_mode is None:
            inverse_mode = self.inverse_mode if mode == self.mode else default_inverse_mode(mode)
        inverse_mode = check_choice(inverse_mode, "inverse_mode", DESERIALIZE_MODES)
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
        self.mode = None if mode is None else check_choice(mode, "mode", DESERIALIZE_MODES)
        self.argmax = check_bool(argmax, "argmax")

    def __call__(
        self, tokens: Any, forest: Forest | None = None, mode: str | None = None, argmax: bool | None = None
    ) -> torch.Tensor:
        """Depatch ``tokens``; ``mode`` and ``argmax`` override the constructor's for this call."""
        mode = self.mode if mode is None else check_choice(mode, "mode", DESERIALIZE_MODES)
        argmax = self.argmax if argmax is None else check_bool(argmax, "argmax")
        recorded, consume = None, forest is None
        if forest is None:
            forest, info = forest_from_trace(tokens, latest=True)
            recorded = info.get("mode")
        mode = resolve_depatch_mode(tokens, mode, recorded)
        mode = check_choice(mode, "mode", DESERIALIZE_MODES)
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
