"""Dictionary SHF transforms: ``EdgeMapd``, ``HierarchicalPatchd``, ``RandHierarchicalPatchd``, ``Depatchd``.

``HierarchicalPatchd`` builds **one** forest per sample from ``ref_key`` (or a precomputed score map
under ``score_key``) and serialises every key with it, each with its own mode; it writes the side keys
``geom`` ``(L, 2D)`` float32 and ``token_mask`` ``(L,)`` bool, which collate with the default collate.
It is invertible: stock ``monai.transforms.Invertd(keys="pred", transform=pre, orig_keys="image")``
depatches a predicted ``(K, L, p, ...)`` to ``(K, *spatial)`` and undoes earlier invertible transforms.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform, RandomizableTransform
from monai.utils import ensure_tuple, ensure_tuple_rep

from monai_shf.enums import DeserializeMode, SerializeMode, look_up
from monai_shf.forest import EdgeSpec, Forest, ForestSpec
from monai_shf.validation import check_bool, check_int

from .array import Depatch, EdgeMap, HierarchicalPatch, MaskPaddingTokens
from .functional import forest_from_trace, patch_record_index, resolve_depatch_mode

__all__ = [
    "EdgeMapd",
    "HierarchicalPatchd",
    "RandHierarchicalPatchd",
    "Depatchd",
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
]


class EdgeMapd(MapTransform):
    """Dictionary :class:`~monai_shf.transforms.EdgeMap`: ``(C, *spatial) -> (1, *spatial)`` uint8 (soft) or bool.

    Args:
        keys: images to take edges of.
        output_keys: where to write each edge map (default: replace the input).
        Others: see :class:`~monai_shf.transforms.EdgeMap`.
    """

    backend = EdgeMap.backend

    def __init__(
        self,
        keys: KeysCollection,
        output_keys: KeysCollection | None = None,
        allow_missing_keys: bool = False,
        edges: EdgeSpec | Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.edges = EdgeMap(edges, **options)
        self.output_keys = ensure_tuple(output_keys) if output_keys is not None else self.keys
        if len(self.output_keys) != len(self.keys):
            raise ValueError(f"output_keys must name one key per key, got {self.output_keys} for {self.keys}.")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, out_key in self.key_iterator(d, self.output_keys):
            d[out_key] = self.edges(d[key])
        return d


class HierarchicalPatchd(MapTransform, InvertibleTransform):
    """SHF patching of a sample: one forest, every key serialised with it.

    Args:
        keys: keys to patch (image, label, ...), each ``(C, *spatial)`` of the same spatial shape.
        length: token budget ``L``.
        patch_size: token side ``p``.
        ref_key: key whose edge map builds the forest (default ``"image"``).
        mode: serialisation mode per key (or one for all): ``"area"`` (images), ``"nearest"`` (hard
            labels), ``"fraction"`` (soft labels). Default ``"area"``.
        inverse_mode: depatching mode per key, ``"linear"``/``"nearest"``; default from ``mode``.
        num_classes: ``K`` per key, required for the keys whose mode is ``"fraction"``.
        padding_value: value of padding tokens per key (e.g. a loss ``ignore_index`` for labels).
        spec: the :class:`~monai_shf.forest.ForestSpec` (or a mapping of its options, e.g. a bundle's
            ``forest:`` entry); ``length``/``patch_size`` and ``forest_options`` are set on top of it.
        spacing: the voxel size of ``data[ref_key]``: ``None`` (voxel cubes), ``"meta"`` (its affine) or
            the sizes per spatial axis; see :class:`~monai_shf.transforms.HierarchicalPatch`.
        forest_options: forest and edge options one by one (``min_size``, ``criterion``, ``fill``,
            ``edge_kind``, ``kernel_size``, ``thresholds``, ``channel_reduction``, ``edge_method``, ...; see
            :class:`~monai_shf.forest.ForestSpec`); an unknown name is a ``ValueError``.
        score_key: optional key of a precomputed ``(1, *spatial)`` score/edge map (skips edges).
        geom_key, token_mask_key: names of the side keys written (``None`` to skip one).
        allow_missing_keys: don't raise for missing keys (``ref_key`` is always required).
        inverse_argmax: per key: the inverse returns ``(1, *spatial)`` class indices (argmax of the
            depatched scores, no ``K x H x W`` float canvas). ``Invertd(keys="pred", orig_keys="image")``
            follows the ``"image"`` key's setting: set it there when the prediction is only needed as labels.
    """

    backend = HierarchicalPatch.backend

    def __init__(
        self,
        keys: KeysCollection,
        length: int | None = None,
        patch_size: int | None = None,
        ref_key: str = "image",
        mode: Sequence[str] | str = "area",
        inverse_mode: Sequence[str | None] | str | None = None,
        num_classes: Sequence[int | None] | int | None = None,
        padding_value: Sequence[float] | float = 0.0,
        score_key: str | None = None,
        geom_key: str | None = "geom",
        token_mask_key: str | None = "token_mask",
        allow_missing_keys: bool = False,
        inverse_argmax: Sequence[bool] | bool = False,
        spec: ForestSpec | Mapping[str, Any] | None = None,
        spacing: Any = None,
        **forest_options: Any,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        n = len(self.keys)
        self.inverse_argmax = ensure_tuple_rep(inverse_argmax, n)
        self.mode = ensure_tuple_rep(mode, n)
        self.inverse_mode = ensure_tuple_rep(inverse_mode, n)
        self.num_classes = ensure_tuple_rep(num_classes, n)
        self.padding_value = ensure_tuple_rep(padding_value, n)
        self.patcher = HierarchicalPatch(
            length,
            patch_size,
            mode=self.mode[0],
            num_classes=self.num_classes[0],
            spec=spec,
            spacing=spacing,
            **forest_options,
        )
        # fail at construction, not in the middle of an epoch
        for flag in self.inverse_argmax:
            check_bool(flag, "inverse_argmax (per key)")
        for mode_, inverse_, classes in zip(self.mode, self.inverse_mode, self.num_classes):
            look_up(mode_, "mode", SerializeMode)
            if inverse_ is not None:
                look_up(inverse_, "inverse_mode", DeserializeMode)
            if classes is not None:
                check_int(classes, "num_classes", 1)
            elif mode_ == "fraction":
                raise ValueError("num_classes is required for every key whose mode is 'fraction'.")
        self.ref_key, self.score_key = ref_key, score_key
        self.geom_key, self.token_mask_key = geom_key, token_mask_key

    @property
    def spec(self) -> ForestSpec:
        return self.patcher.spec

    @property
    def spacing(self) -> tuple[float, ...] | str | None:
        return self.patcher.spacing

    @property
    def length(self) -> int:
        return self.patcher.length

    @property
    def patch_size(self) -> int:
        return self.patcher.patch_size

    def forest(self, data: Mapping[Hashable, Any], spec: ForestSpec | None = None) -> Forest:
        """The forest of a sample, from ``data[score_key]`` or the score map of ``data[ref_key]``
        (``spec``: this call's spec instead of the transform's)."""
        if self.ref_key not in data:
            raise ValueError(
                f"ref_key {self.ref_key!r} is not in the data (keys: {list(data)}); it is needed to build the forest."
            )
        score = None
        if self.score_key is not None:
            if self.score_key not in data:
                raise ValueError(f"score_key {self.score_key!r} is not in the data (keys: {list(data)}).")
            score = data[self.score_key]
        return self.patcher.build(data[self.ref_key], score=score, spec=spec)

    def patch(self, data: Mapping[Hashable, Any], forest: Forest) -> dict[Hashable, Any]:
        """Serialise every key of ``data`` with ``forest`` and add the side keys."""
        d = dict(data)
        for key, mode, inverse_mode, num_classes, padding_value, inverse_argmax in self.key_iterator(
            d, self.mode, self.inverse_mode, self.num_classes, self.padding_value, self.inverse_argmax
        ):
            img = d[key]
            if not hasattr(img, "shape") or tuple(img.shape[1:]) != forest.spatial_shape:
                shape = tuple(getattr(img, "shape", ()))
                raise ValueError(
                    f"data[{key!r}] has shape {shape} but the forest (from {self.ref_key!r}) covers spatial shape "
                    f"{forest.spatial_shape}; every key must be (C, *spatial) with the same spatial shape."
                )
            try:
                d[key] = self.patcher(
                    img,
                    forest=forest,
                    mode=mode,
                    inverse_mode=inverse_mode,
                    num_classes=num_classes,
                    padding_value=padding_value,
                    inverse_argmax=inverse_argmax,
                )
            except ValueError as error:  # bad data (e.g. a label value >= num_classes): name its file
                source = img.meta.get("filename_or_obj") if isinstance(img, MetaTensor) else None
                if not source:
                    raise
                raise ValueError(f"data[{key!r}] ({source}): {error}") from None
        return self.add_side_keys(d, forest)

    def add_side_keys(self, data: dict[Hashable, Any], forest: Forest) -> dict[Hashable, Any]:
        """Write ``geom`` ``(L, 2D)`` float32 and ``token_mask`` ``(L,)`` bool of ``forest`` into ``data``."""
        if self.geom_key is not None:
            data[self.geom_key] = torch.from_numpy(forest.geom())
        if self.token_mask_key is not None:
            data[self.token_mask_key] = torch.from_numpy(forest.token_mask())
        return data

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        return self.patch(data, self.forest(data))

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.patcher.inverse(d[key])
        return d


class RandHierarchicalPatchd(RandomizableTransform, HierarchicalPatchd):
    """:class:`HierarchicalPatchd` with the paper's random edge parameters, drawn per sample.

    The Gaussian kernel is drawn from ``kernel_sizes`` (paper: {1, 3, 5, 7}) and the Canny low
    threshold uniformly among the integers of ``[low_range[0], low_range[1])`` (paper: [50, 100)),
    high = low + ``threshold_gap`` (paper: 50). Seed it with ``set_random_state`` (as
    ``monai.utils.set_determinism`` and MONAI's data loaders do). Use the deterministic
    :class:`HierarchicalPatchd` for validation and inference.

    Args:
        keys, length, patch_size: see :class:`HierarchicalPatchd`.
        kernel_sizes: odd Gaussian kernel sides to draw from.
        low_range: ``(low, high)``: the Canny low threshold is drawn among the integers of ``[low, high)``.
        threshold_gap: Canny high threshold minus the low one.
        kwargs: every other keyword argument of :class:`HierarchicalPatchd` (``ref_key``, ``mode``,
            ``num_classes``, ``padding_value``, ``min_size``, ``fill``, ...), except the fixed
            ``kernel_size`` and ``thresholds`` that this transform draws.
    """

    backend = HierarchicalPatchd.backend

    def __init__(
        self,
        keys: KeysCollection,
        length: int | None = None,
        patch_size: int | None = None,
        kernel_sizes: Sequence[int] = (1, 3, 5, 7),
        low_range: Sequence[int] = (50, 100),
        threshold_gap: float = 50,
        **kwargs: Any,
    ) -> None:
        fixed = sorted({"kernel_size", "thresholds"} & set(kwargs))
        if fixed:
            raise TypeError(
                f"RandHierarchicalPatchd draws {fixed} per sample: give kernel_sizes, low_range and threshold_gap "
                "instead (or use HierarchicalPatchd for fixed edge parameters)."
            )
        RandomizableTransform.__init__(self, prob=1.0)
        self.kernel_sizes = tuple(check_int(k, "kernel_sizes", 1) for k in ensure_tuple(kernel_sizes))
        if not self.kernel_sizes or any(k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"kernel_sizes must be a non-empty sequence of odd integers, got {kernel_sizes!r}.")
        if len(low_range) != 2 or not 0 <= low_range[0] < low_range[1]:
            raise ValueError(f"low_range must be (low, high) with 0 <= low < high, got {low_range!r}.")
        self.low_range = (check_int(low_range[0], "low_range", 0), check_int(low_range[1], "low_range", 1))
        if threshold_gap < 0:
            raise ValueError(f"threshold_gap must be >= 0, got {threshold_gap}.")
        self.threshold_gap = float(threshold_gap)
        HierarchicalPatchd.__init__(self, keys, length, patch_size, **kwargs)
        self.drawn_spec = self.spec

    def randomize(self, data: Any = None) -> None:
        kernel_size = int(self.R.choice(self.kernel_sizes))
        low = float(self.R.randint(self.low_range[0], self.low_range[1]))
        self.drawn_spec = self.spec.replace(kernel_size=kernel_size, thresholds=(low, low + self.threshold_gap))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        self.randomize()
        return self.patch(data, self.forest(data, spec=self.drawn_spec))


class Depatchd(MapTransform):
    """Dictionary :class:`~monai_shf.transforms.Depatch`: ``(C, L, p, ...)`` -> ``(C, *spatial)``.

    The forest of each key comes from its own patch record when it has one (the output's trace lacks
    it), else from ``ref_key``'s record, e.g. ``Depatchd(keys="pred", ref_key="image")`` after
    ``decollate_batch``, where the prediction is a bare tensor but the image still carries its trace.
    Nothing in ``data`` is modified.

    Args:
        keys: token keys to depatch.
        ref_key: key whose trace holds the forest for keys without their own record.
        mode: ``"linear"``/``"nearest"`` per key; ``None`` (default): class maps by ``"nearest"``,
            the rest by the mode recorded with the forest, as ``Invertd`` does (see
            :func:`~monai_shf.transforms.resolve_depatch_mode`).
        argmax: per key: ``(1, *spatial)`` class indices instead of the ``C`` score planes (no
            ``C x H x W`` float canvas).
    """

    backend = Depatch.backend

    def __init__(
        self,
        keys: KeysCollection,
        ref_key: str | None = "image",
        mode: Sequence[str | None] | str | None = None,
        allow_missing_keys: bool = False,
        argmax: Sequence[bool] | bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.ref_key = ref_key
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        self.argmax = tuple(check_bool(a, "argmax") for a in ensure_tuple_rep(argmax, len(self.keys)))
        self.depatcher = Depatch(mode=None)
        for m in self.mode:
            if m is not None:
                look_up(m, "mode", DeserializeMode)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, mode, argmax in self.key_iterator(d, self.mode, self.argmax):
            tokens = d[key]
            if patch_record_index(tokens) is not None:
                d[key] = self.depatcher(tokens, mode=mode, argmax=argmax)
                continue
            if self.ref_key is None or self.ref_key not in d:
                raise ValueError(
                    f"data[{key!r}] carries no patch record and ref_key {self.ref_key!r} is not in the data."
                )
            forest, info = forest_from_trace(d[self.ref_key])
            mode = resolve_depatch_mode(tokens, mode, info.get("mode"))
            d[key] = self.depatcher(tokens, forest=forest, mode=mode, argmax=argmax)
        return d


class MaskPaddingTokensd(MapTransform):
    """Dictionary :class:`~monai_shf.transforms.MaskPaddingTokens`: zero the padding tokens of
    ``keys`` using ``data[token_mask_key]`` (``(L,)`` bool), e.g. in an engine's postprocessing
    before token-space metrics."""

    backend = MaskPaddingTokens.backend

    def __init__(
        self, keys: KeysCollection, token_mask_key: str = "token_mask", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.token_mask_key = token_mask_key
        self.masker = MaskPaddingTokens()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.token_mask_key not in d:
            raise ValueError(f"token_mask_key {self.token_mask_key!r} is not in the data (keys: {list(d)}).")
        for key in self.key_iterator(d):
            d[key] = self.masker(d[key], d[self.token_mask_key])
        return d


EdgeMapD = EdgeMapDict = EdgeMapd
HierarchicalPatchD = HierarchicalPatchDict = HierarchicalPatchd
RandHierarchicalPatchD = RandHierarchicalPatchDict = RandHierarchicalPatchd
DepatchD = DepatchDict = Depatchd
MaskPaddingTokensD = MaskPaddingTokensDict = MaskPaddingTokensd
