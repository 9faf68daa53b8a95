"""Voxel spacing in the forest: which axes every depth of the tree halves.

Spacing is a property of the image (millimetres per voxel along each array axis), not a forest option.
With an isotropic spacing (or none) the forest is the voxel-cube quadtree/octree: every split halves
every axis. With an anisotropic spacing the roots are near-cubic in millimetres and each depth halves
only the axes whose nominal extent (in millimetres) is more than half the longest one that can still be
halved: a thick-slice axis is left whole until the in-plane axes have come down to its extent, as
nnU-Net pools anisotropic axes later. An axis that can no longer be halved (its sides below
``2 * min_size``) is left as it is while the others go on. The choice depends only on the depth (all
nodes of a depth have the same nominal extents), so the count pyramid and the vectorised build of
:mod:`monai_shf.forest.tree` keep one interval grid per depth and axis.

Leaves are then boxes whose side along each axis is the root's side halved ``h_a`` times (a power of
two per axis for power-of-two roots), and a split along ``k`` axes adds ``2**k - 1`` leaves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["check_spacing", "relative_spacing", "split_schedule", "physical_root_limits", "SPACING_RTOL"]


def check_spacing(spacing: Any, ndim: int) -> tuple[float, ...] | None:
    """``spacing`` as ``ndim`` positive finite floats (``None`` stays ``None``).

    Raises:
        TypeError: not a sequence of real numbers.
        ValueError: wrong length, or an entry ``<= 0``, NaN or infinite; the message names ``spacing``.
    """
    if spacing is None:
        return None
    if (
        isinstance(spacing, (str, bytes))
        or not isinstance(spacing, (Sequence, np.ndarray))
        and not hasattr(spacing, "tolist")
    ):
        raise TypeError(f"spacing must be None or a sequence of {ndim} voxel sizes, got {type(spacing).__name__}.")
    values = spacing.tolist() if hasattr(spacing, "tolist") else list(spacing)
    values = values if isinstance(values, list) else [values]
    if len(values) != ndim:
        raise ValueError(f"spacing must have {ndim} entries (one per spatial axis), got {len(values)}: {values}.")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"spacing entries must be real numbers, got {v!r}.")
        if not math.isfinite(float(v)) or float(v) <= 0:
            raise ValueError(f"spacing entries must be finite and > 0, got {values}.")
        out.append(float(v))
    return tuple(out)


# relative difference below which two voxel sizes are the same (spacings computed from a float32 affine,
# e.g. a rotated NIfTI header, differ from the stored pixdim in the 7th digit)
SPACING_RTOL = 1e-5


def relative_spacing(spacing: Any, ndim: int) -> tuple[float, ...] | None:
    """The validated ``spacing`` divided by its smallest entry (entries within :data:`SPACING_RTOL` of
    it count as equal to it); ``None`` when it is ``None`` or isotropic (the voxel-cube forest)."""
    values = check_spacing(spacing, ndim)
    if values is None:
        return None
    finest = min(values)
    rel = tuple(1.0 if v / finest - 1.0 <= SPACING_RTOL else v / finest for v in values)
    return None if all(r == 1.0 for r in rel) else rel


def physical_root_limits(shape: Sequence[int], min_size: int, rel: Sequence[float]) -> list[int]:
    """Roots per axis that make near-cubic roots in millimetres (before the budget is applied).

    The shortest physical side sets the root side; along every other axis as many roots as fit, but
    never roots shorter than ``min_size`` voxels (nor more than one per voxel)."""
    extents = [s * r for s, r in zip(shape, rel)]
    side = min(extents)
    return [max(1, min(int(e / side + 1e-9), s // min_size)) for e, s in zip(extents, shape)]


def split_schedule(
    levels: Sequence[int], shape: Sequence[int], roots: Sequence[int], rel: Sequence[float] | None
) -> list[tuple[int, ...]]:
    """The axes halved at every depth of the tree: ``schedule[d]`` for ``d = 0..max_depth - 1``.

    Args:
        levels: per axis, how many times its intervals can be halved (depths of its interval grid minus one).
        shape: the image's spatial shape (voxels).
        roots: roots per axis.
        rel: relative spacing (:func:`relative_spacing`), ``None`` for the voxel-cube forest.

    Returns:
        the tuples of axes (ascending) halved at each depth. ``rel=None``: every axis at every depth,
        until the first axis runs out (the voxel-cube forest). Otherwise the axes that can still be
        halved and whose nominal extent in millimetres is more than half the longest of them, until
        no axis can be halved.
    """
    ndim = len(levels)
    if rel is None:
        return [tuple(range(ndim))] * min(levels)
    extents = [s / r * f for s, r, f in zip(shape, roots, rel)]
    done = [0] * ndim
    schedule = []
    while True:
        live = [a for a in range(ndim) if done[a] < levels[a]]
        if not live:
            return schedule
        longest = max(extents[a] for a in live)
        axes = tuple(a for a in live if 2.0 * extents[a] > longest)
        for a in axes:
            done[a] += 1
            extents[a] /= 2.0
        schedule.append(axes)
