"""The forest's options in one frozen, validated spec: :class:`ForestSpec` with its :class:`EdgeSpec`.

Every layer takes the same spec and spells each option the same way: :func:`~monai_shf.forest.build_forest`
and :func:`~monai_shf.forest.edge_forest`, the slide and volume forests, the transforms
(``HierarchicalPatchd(keys, spec=...)`` or the options one by one), ``segment_slide``, the command line and
the bundles (a ``forest:`` mapping in every config). A spec is validated once, when it is made; an unknown
or misspelled option is a ``ValueError`` that names it (and the option it was probably meant to be), never
ignored.

The flat option names (:data:`FOREST_OPTIONS`, :data:`EDGE_OPTIONS`) are the field names::

    length, patch_size, min_size, criterion, fill, area_prior, max_side, forest_level   (ForestSpec)
    edge_kind, kernel_size, thresholds, channel_reduction, edge_method                  (EdgeSpec)

``ForestSpec.create(spec, **options)`` makes a spec from another spec, a mapping of flat names (a bundle's
``forest:`` entry) or nothing, with ``options`` set one by one.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from monai_shf.enums import ChannelReduction, EdgeKind, EdgeMethod, FillMode, SplitCriterion, values
from monai_shf.validation import check_choice, check_int

__all__ = [
    "ForestSpec",
    "EdgeSpec",
    "FOREST_OPTIONS",
    "EDGE_OPTIONS",
    "RENAMED_OPTIONS",
    "SPLIT_CRITERIA",
    "FILL_MODES",
    "EDGE_KINDS",
    "EDGE_METHODS",
    "CHANNEL_REDUCTIONS",
    "check_edge_args",
]

SPLIT_CRITERIA = values(SplitCriterion)
"""Split priorities of the build: ``"error"`` (expected depatching error) or ``"edges"`` (the paper's)."""
FILL_MODES = values(FillMode)
"""Use of budget left when no leaf with a positive priority can be split."""
EDGE_KINDS = values(EdgeKind)
"""Score maps: soft edges (uint8, default) or the paper's binary Canny edges."""
EDGE_METHODS = values(EdgeMethod)
"""3D Canny operators (``edge_kind="canny"`` only)."""
CHANNEL_REDUCTIONS = values(ChannelReduction)
"""How a multi-channel image's gradients are reduced to one score map."""

RENAMED_OPTIONS = {
    "split_criterion": "criterion",
    "edge_channel_reduction": "channel_reduction",
    "kind": "edge_kind",
    "method": "edge_method",
}
"""Names that earlier versions (bundle configs of 0.1, ``EdgeMap``) used, and the option each is now."""


def check_edge_args(kernel_size: Any, thresholds: Any) -> tuple[int, float, float]:
    """``(k, low, high)`` from a Gaussian ``kernel_size`` (odd, >= 1) and Canny ``thresholds``
    ``(low, high)`` with ``0 <= low <= high``, or a ``ValueError``/``TypeError`` naming the argument."""
    k = check_int(kernel_size, "kernel_size", 1)
    if k % 2 == 0:
        raise ValueError(f"kernel_size must be odd (a Gaussian kernel side), got {k}.")
    if isinstance(thresholds, str) or not isinstance(thresholds, (Sequence, np.ndarray)) or len(thresholds) != 2:
        raise TypeError(f"thresholds must be a pair (low, high), got {thresholds!r}.")
    low, high = (float(t) for t in thresholds)
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high < low:
        raise ValueError(f"thresholds must satisfy 0 <= low <= high, got {tuple(thresholds)}.")
    return k, low, high


@dataclass(frozen=True)
class EdgeSpec:
    """How the forest's score map is computed from an image.

    Args:
        edge_kind: ``"soft"`` (default: gradient relative to Canny's low threshold, capped at one edge
            pixel, uint8) or ``"canny"`` (the paper's binary edges); see :data:`EDGE_KINDS`.
        kernel_size: odd Gaussian kernel side (1 = no blur).
        thresholds: Canny ``(low, high)`` on the 8-bit scale; soft edges saturate at ``low / 8``.
        channel_reduction: ``"max"`` (the channel with the largest gradient) or ``"mean"``.
        edge_method: 3D Canny operator, ``"itk"`` or ``"slicewise"`` (``edge_kind="canny"`` only).
    """

    edge_kind: str = "soft"
    kernel_size: int = 3
    thresholds: tuple[float, float] = (50.0, 100.0)
    channel_reduction: str = "max"
    edge_method: str = "itk"

    def __post_init__(self) -> None:
        k, low, high = check_edge_args(self.kernel_size, self.thresholds)
        object.__setattr__(self, "edge_kind", check_choice(self.edge_kind, "edge_kind", EDGE_KINDS))
        object.__setattr__(self, "kernel_size", k)
        object.__setattr__(self, "thresholds", (low, high))
        reduction = check_choice(self.channel_reduction, "channel_reduction", CHANNEL_REDUCTIONS)
        object.__setattr__(self, "channel_reduction", reduction)
        object.__setattr__(self, "edge_method", check_choice(self.edge_method, "edge_method", EDGE_METHODS))


def _check_real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}.")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}.")
    return float(value)


@dataclass(frozen=True)
class ForestSpec:
    """Everything that decides a forest, validated when made (see the module docstring).

    Args:
        length: the token budget ``L >= 1`` (exactly ``L`` tokens).
        patch_size: token side ``p``; the ``"error"`` criterion stops splitting a leaf whose longest side is
            at most ``p`` (already at full resolution). ``None``: no such cap (the transforms require it).
        min_size: smallest leaf side in pixels (level-0 pixels for slides and volumes).
        criterion: split priority, ``"error"`` (default) or ``"edges"`` (the paper's); :data:`SPLIT_CRITERIA`.
        fill: ``"uniform"`` (leftover budget refines the largest leaves) or ``"pad"`` (padding tokens).
        area_prior: ``"error"`` only, ``>= 0``: weight of an edge-free node (0: trust the score).
        max_side: pyramids (slides, volumes) only: the score map is computed on the finest level whose
            longest side is at most this (in-memory images always use their full resolution).
        forest_level: pyramids only: compute the score map on this level instead.
        edges: the score map's :class:`EdgeSpec`.
    """

    length: int
    patch_size: int | None = None
    min_size: int = 2
    criterion: str = "error"
    fill: str = "uniform"
    area_prior: float = 0.0
    max_side: int = 8192
    forest_level: int | None = None
    edges: EdgeSpec = field(default_factory=EdgeSpec)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "length", check_int(self.length, "length", 1))
        if self.patch_size is not None:
            set_(self, "patch_size", check_int(self.patch_size, "patch_size", 1))
        set_(self, "min_size", check_int(self.min_size, "min_size", 1))
        set_(self, "criterion", check_choice(self.criterion, "criterion", SPLIT_CRITERIA))
        set_(self, "fill", check_choice(self.fill, "fill", FILL_MODES))
        set_(self, "area_prior", _check_real(self.area_prior, "area_prior"))
        set_(self, "max_side", check_int(self.max_side, "max_side", 1))
        if self.forest_level is not None:
            set_(self, "forest_level", check_int(self.forest_level, "forest_level", 0))
        if isinstance(self.edges, Mapping):
            set_(self, "edges", EdgeSpec(**_known(self.edges, EDGE_OPTIONS, "edge option")))
        if not isinstance(self.edges, EdgeSpec):
            raise TypeError(
                f"edges must be an EdgeSpec (or a mapping of its options), got {type(self.edges).__name__}."
            )

    @classmethod
    def create(cls, spec: ForestSpec | Mapping[str, Any] | int | None = None, **options: Any) -> ForestSpec:
        """A spec from ``spec`` (a :class:`ForestSpec`, a mapping of flat option names such as a bundle's
        ``forest:`` entry, the length ``L`` alone, or ``None``) with ``options`` (flat names) set on top.

        Raises:
            ValueError: an unknown or renamed option (the message names it and the valid ones), or no
                ``length`` at all; ``TypeError``/``ValueError`` of the validation of each value.
        """
        if isinstance(spec, ForestSpec):
            return spec.replace(**options) if options else spec
        if spec is None:
            spec = {}
        elif isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
            spec = {"length": spec}
        if not isinstance(spec, Mapping):
            raise TypeError(
                f"spec must be a ForestSpec, a mapping of forest options or None, got {type(spec).__name__}."
            )
        merged = {**_flatten(spec), **_known(options, ALL_OPTIONS, "forest option")}
        if "length" not in merged:
            raise ValueError("a forest spec needs length (the token budget L).")
        edges = {k: merged.pop(k) for k in EDGE_OPTIONS if k in merged}
        return cls(**merged, edges=EdgeSpec(**edges))

    def replace(self, **options: Any) -> ForestSpec:
        """A copy with ``options`` (flat names, forest or edge options) changed, validated again."""
        options = _known(options, ALL_OPTIONS, "forest option")
        edges = {k: options.pop(k) for k in EDGE_OPTIONS if k in options}
        return replace(self, **options, edges=replace(self.edges, **edges) if edges else self.edges)

    def options(self) -> dict[str, Any]:
        """The spec as a flat mapping of option names to values (what :meth:`create` reads back)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "edges"}
        out.update({f.name: getattr(self.edges, f.name) for f in fields(self.edges)})
        return out


FOREST_OPTIONS = tuple(f.name for f in fields(ForestSpec) if f.name != "edges")
"""The flat names of :class:`ForestSpec`'s own options."""
EDGE_OPTIONS = tuple(f.name for f in fields(EdgeSpec))
"""The flat names of :class:`EdgeSpec`'s options."""
ALL_OPTIONS = FOREST_OPTIONS + EDGE_OPTIONS


def _known(options: Mapping[str, Any], valid: tuple[str, ...], what: str) -> dict[str, Any]:
    """``options`` as a dict, or a ValueError naming the first unknown (or renamed) name."""
    for name in options:
        if name in valid:
            continue
        if name in RENAMED_OPTIONS and RENAMED_OPTIONS[name] in valid:
            raise ValueError(f"{what} {name!r} is now called {RENAMED_OPTIONS[name]!r}.")
        close = difflib.get_close_matches(str(name), valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown {what} {name!r}{hint}; the options are {list(valid)}.")
    return dict(options)


def _flatten(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A mapping of flat names, where ``edges`` may also be a nested mapping or an :class:`EdgeSpec`."""
    spec = dict(spec)
    edges = spec.pop("edges", None)
    out = _known(spec, ALL_OPTIONS, "forest option")
    if isinstance(edges, EdgeSpec):
        edges = {f.name: getattr(edges, f.name) for f in fields(edges)}
    if edges is not None:
        if not isinstance(edges, Mapping):
            raise TypeError(f"edges must be an EdgeSpec or a mapping, got {type(edges).__name__}.")
        out.update(_known(edges, EDGE_OPTIONS, "edge option"))
    return out
