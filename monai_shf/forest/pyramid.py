"""Forest geometry on image pyramids (slides, multiscale volumes): which level each leaf is read from.

Pure geometry, no file access: the slide and volume packages pass their level scales and shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from monai_shf.validation import check_int

from .tree import Forest

__all__ = ["level0_to_level", "leaf_read_levels", "check_token_source"]


def level0_to_level(bounds: np.ndarray, scale: float, side: int) -> np.ndarray:
    """Level-0 boundaries along one axis to a level whose pixels cover ``scale`` level-0 pixels:
    ``floor(b / scale + 0.5)``, clipped to the level's ``side``. Monotone, so boxes stay ordered."""
    return np.minimum(np.floor(np.asarray(bounds) / scale + 0.5).astype(np.int64), side)


def leaf_read_levels(
    forest: Forest,
    level_scales: Sequence[Sequence[float]],
    level_shapes: Sequence[Sequence[int]],
    patch_size: int,
    top: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The coarsest level (at most ``top``) at which each leaf still spans ``patch_size`` pixels along
    every axis, and its box there.

    Args:
        forest: the forest, in level-0 coordinates (``D`` axes).
        level_scales: per level, ``D`` level-0 pixels per level pixel (level 0: all 1).
        level_shapes: per level, its ``D`` sides.
        patch_size: token side ``p``.
        top: coarsest level allowed.

    Returns:
        ``(levels (N,), starts (N, D), sizes (N, D))`` int64: the level of each leaf and its box there.
    """
    p = check_int(patch_size, "patch_size", 1)
    levels = np.zeros(forest.num_leaves, dtype=np.int64)
    starts, sizes, ends = forest.starts.copy(), forest.sizes.copy(), forest.ends
    axes = range(forest.spatial_dims)
    for level in range(1, top + 1):
        scale, shape = level_scales[level], level_shapes[level]
        lo = np.stack([level0_to_level(forest.starts[:, a], scale[a], shape[a]) for a in axes], axis=1)
        hi = np.stack([level0_to_level(ends[:, a], scale[a], shape[a]) for a in axes], axis=1)
        fits = ((hi - lo) >= p).all(axis=1)
        levels[fits] = level
        starts[fits] = lo[fits]
        sizes[fits] = (hi - lo)[fits]
    return levels, starts, sizes


def check_token_source(
    source: Any, forest: Any, patch: int, mode: str, num_classes: Any, what: str, builder: str
) -> int | None:
    """Check that ``forest`` was built on the pyramid ``source`` (anything with ``path``, ``shape`` and
    ``num_channels``: a slide, a volume) and that ``p``-tokens of ``mode`` can be read from it; returns ``K``
    for ``mode="fraction"`` (else None). Errors name the file, ``what`` it is and the ``builder`` to use."""
    if not isinstance(forest, Forest):
        raise TypeError(f"forest must be a monai_shf.forest.Forest, got {type(forest).__name__}.")
    if forest.spatial_shape != tuple(source.shape):
        raise ValueError(
            f"the forest tiles {forest.spatial_shape} but {source.path} is shaped {source.shape} at level 0: "
            f"build the forest on this {what} ({builder})."
        )
    if min(source.shape) < patch:
        raise ValueError(f"{source.path} ({source.shape}) is smaller than the token side patch_size={patch}.")
    if mode != "fraction":
        return None
    if source.num_channels != 1:
        raise ValueError(f"mode='fraction' needs a one-channel label {what}, {source.path} has {source.num_channels}.")
    if num_classes is None:
        raise ValueError(
            f"mode='fraction' on a {what} needs num_classes (it cannot be inferred without reading it all)."
        )
    return check_int(num_classes, "num_classes", 1)
