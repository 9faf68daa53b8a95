"""The symmetrical hierarchical forest: a best-first quadtree (D = 2) / octree (D = 3).

One dimension-generic implementation. The image is covered by a small grid of near-cubic *roots*
(one root for a square or cubic image); every node splits into ``2**D`` children by halving each
axis at ``start + size // 2``. Nodes are split best-first by a *priority* computed from their score
(the sum of the score map, i.e. the edge-pixel count of an edge map) until exactly ``length`` tokens
are used.

Split criteria (``SPLIT_CRITERIA``), for a node of score ``E``, longest side ``s`` and volume ``V``:

* ``"error"`` (default): ``E * s + area_prior * V``, and 0 once ``s <= patch_size``. A leaf of side
  ``s`` resampled to a ``p``-pixel token holds its label at a resolution of ``s / p`` pixels, so a
  label boundary of measure ``B`` (length in 2D, area in 3D) inside it is blurred over about
  ``B * s / p`` pixels when depatched: the leaf's expected depatching error. Splitting the node
  halves ``s`` and so removes about ``B * s / (2p)``; with the edge count ``E`` for ``B`` that is
  the priority up to the constant ``1 / 2p`` (which does not change the order). A node no larger
  than the token is already at full resolution: splitting it removes nothing. The optional area
  prior stands for boundaries the edge map missed (``area_prior * V`` is ``area_prior`` boundaries
  crossing the node: ``s ** (D - 1) * s``). The priority is unchanged when the image is upsampled
  (``E * s`` and ``V`` both scale by the factor ``** D``) and when the score map is multiplied by a
  constant (with ``area_prior = 0``), unlike a fixed blend ``w * E + V``.
* ``"edges"``: ``E``, the paper's criterion (split the leaf with the most edge pixels).

Cost: ``O(V + L log L)`` for an image of ``V`` pixels. Region scores are never summed per node;
they come from a *count pyramid*: along each axis the intervals of depth ``d`` are the same for every
node (halving is separable), so the scores of all depth-``d`` nodes form one block-sum grid ``C[d]``,
computed once at the finest depth that can be split and then by pairwise sums (interval ``i`` of
depth ``d`` is intervals ``2i, 2i + 1`` of depth ``d + 1``).

Split order (explicit tie-break):

1. larger priority first (priority phase; only nodes with priority > 0);
2. larger volume first;
3. earlier in Z-order (Morton order, axis 0 most significant; roots in row-major order).

A child never comes before its parent in this order: its score is at most its parent's and its
volume smaller, so with ``"edges"`` its priority is at most the parent's (ties go to the larger
volume); with ``"error"`` both ``E * s`` and ``V`` are strictly smaller (``s`` becomes
``ceil(s / 2) < s``), so a positive priority strictly decreases, and the cap at ``patch_size``
only turns priorities to 0 further down. Hence a best-first (heap) build splits exactly the first
``K`` nodes of the whole potential tree in this order. That set is selected vectorised, level by
level, pruning below the ``K``-th best priority seen so far (``_priority_splits``): the same result
as a heap, without a Python loop per split.
When every node with a positive priority is split (or unsplittable) and budget remains, ``fill``
decides: ``"uniform"`` keeps splitting the largest leaves (uniform refinement, ties in Z-order);
``"pad"`` stops and leaves padding tokens. A node is splittable when every side is at least
``2 * min_size``, so leaves never go below ``min_size`` (except along an axis that is itself
shorter than ``min_size``). Each split adds ``2**D - 1`` leaves; the build stops before it would
overshoot, so at most ``2**D - 2`` tokens are padding when the image has room for ``length`` leaves.

Anisotropic voxels (``spacing=``, :mod:`monai_shf.forest.spacing`): roots near-cubic in millimetres and
each depth halving only the physically long axes, so leaves are boxes near-cubic in millimetres. A split
along ``k`` axes adds ``2**k - 1`` leaves; a split that does not fit the budget left is skipped (its node
stays a leaf) and cheaper ones after it in the order are still taken, as a heap that skips would. An
isotropic spacing builds exactly the forest above.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from monai_shf.validation import check_array, check_int, to_numpy

from . import device as _device
from .edges import score_map
from .spacing import check_spacing, physical_root_limits, relative_spacing, split_schedule
from .spec import ForestSpec

__all__ = ["Forest", "build_forest", "edge_forest"]

# deprecated names of fill modes ("area" also names the serialisation mode: a different thing)
# split priorities of build_forest; the first is the default


@dataclass(frozen=True, eq=False)
class Forest:
    """The leaves of a hierarchical forest over an image of ``spatial_shape``.

    Attributes:
        starts: ``(N, D)`` int64, first index of every leaf along each array axis (row, col[, slice]).
        sizes: ``(N, D)`` int64, extent of every leaf along each axis. Leaves tile the image exactly
            and are stored in Z-order.
        spatial_shape: the ``D`` spatial sizes the leaves tile.
        length: the token budget ``L >= N``; tokens ``N..L-1`` are padding.
    """

    starts: np.ndarray
    sizes: np.ndarray
    spatial_shape: tuple[int, ...]
    length: int

    def __post_init__(self) -> None:
        starts = np.array(self.starts, dtype=np.int64, copy=True).reshape(-1, len(self.spatial_shape))
        sizes = np.array(self.sizes, dtype=np.int64, copy=True).reshape(starts.shape)
        shape = tuple(int(s) for s in self.spatial_shape)
        length = check_int(self.length, "length", 1)
        if len(shape) not in (2, 3):
            raise ValueError(f"spatial_shape must have 2 or 3 entries, got {shape}.")
        if starts.shape[0] > length:
            raise ValueError(f"a forest of length {length} cannot hold {starts.shape[0]} leaves.")
        _check_length(length, shape)
        if (sizes < 1).any() or (starts < 0).any() or (starts + sizes > np.asarray(shape)).any():
            raise ValueError("forest leaves must be non-empty boxes inside spatial_shape.")
        _check_tiling(starts, sizes, shape)
        self._set(starts, sizes, shape, length)

    def _set(self, starts: np.ndarray, sizes: np.ndarray, shape: tuple[int, ...], length: int) -> None:
        starts.setflags(write=False)
        sizes.setflags(write=False)
        object.__setattr__(self, "starts", starts)
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "spatial_shape", shape)
        object.__setattr__(self, "length", length)

    @classmethod
    def _from_build(cls, starts: np.ndarray, sizes: np.ndarray, shape: tuple[int, ...], length: int) -> Forest:
        """A forest from :func:`build_forest`, whose leaves tile by construction: no tiling check.

        ``starts``/``sizes`` must be fresh ``(N, D)`` int64 arrays (they are frozen, not copied)."""
        forest = object.__new__(cls)
        forest._set(starts, sizes, shape, length)
        return forest

    @property
    def spatial_dims(self) -> int:
        return len(self.spatial_shape)

    @property
    def num_leaves(self) -> int:
        """``N``, the number of real (non-padding) tokens."""
        return int(self.starts.shape[0])

    @property
    def num_padding(self) -> int:
        return self.length - self.num_leaves

    @property
    def ends(self) -> np.ndarray:
        return self.starts + self.sizes

    def token_mask(self) -> np.ndarray:
        """``(L,)`` bool, True for real leaves, False for padding tokens."""
        mask = np.zeros(self.length, dtype=bool)
        mask[: self.num_leaves] = True
        return mask

    def geom(self) -> np.ndarray:
        """``(L, 2 * D)`` float32 token geometry; padding rows are zero.

        Columns ``0..D-1``: leaf centre along each axis divided by the image size (in ``[0, 1]``).
        Columns ``D..2D-1``: ``log2(leaf size) / log2(image size)`` along each axis (in ``[0, 1]``;
        0 along an axis of size 1).
        """
        shape = np.asarray(self.spatial_shape, dtype=np.float64)
        out = np.zeros((self.length, 2 * self.spatial_dims), dtype=np.float32)
        n = self.num_leaves
        out[:n, : self.spatial_dims] = (self.starts + self.sizes / 2.0) / shape
        log_shape = np.log2(np.maximum(shape, 2.0))
        out[:n, self.spatial_dims :] = np.log2(self.sizes) / log_shape
        return out

    def leaf_index_map(self) -> np.ndarray:
        """``spatial_shape`` int32 array holding, at every pixel, the index of the leaf covering it."""
        out = np.full(self.spatial_shape, -1, dtype=np.int32)
        for i, (s, z) in enumerate(zip(self.starts, self.sizes)):
            out[tuple(slice(a, a + b) for a, b in zip(s, z))] = i
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain picklable values for MONAI's ``applied_operations``.

        Boxes are padded to ``(L, D)`` int32 so that records of different samples collate."""
        starts = np.zeros((self.length, self.spatial_dims), dtype=np.int32)
        sizes = np.zeros((self.length, self.spatial_dims), dtype=np.int32)
        starts[: self.num_leaves] = self.starts
        sizes[: self.num_leaves] = self.sizes
        return {
            "starts": starts,
            "sizes": sizes,
            "num_leaves": self.num_leaves,
            "spatial_shape": np.asarray(self.spatial_shape, dtype=np.int64),
            "length": int(self.length),
        }

    @classmethod
    def from_dict(cls, info: Any) -> Forest:
        """Inverse of :meth:`to_dict` (also accepts tensors, e.g. a collated batch of one sample).

        The record is validated like any user-made forest (exact tiling); a collated record of
        several samples is refused: decollate it first (``monai.data.decollate_batch``)."""
        if not isinstance(info, dict):
            raise TypeError(f"forest info must be a dict made by Forest.to_dict, got {type(info).__name__}.")
        try:
            raw = {key: np.asarray(to_numpy(info[key])) for key in ("spatial_shape", "num_leaves", "length")}
            starts_raw, sizes_raw = np.asarray(to_numpy(info["starts"])), np.asarray(to_numpy(info["sizes"]))
        except KeyError as e:
            raise ValueError(f"forest info is missing the key {e}.") from None
        batch = raw["num_leaves"].size
        if batch != 1 or raw["length"].size != 1 or raw["spatial_shape"].ndim > 1 and raw["spatial_shape"].shape[0] > 1:
            raise ValueError(
                f"forest info holds the records of {batch} samples (a collated batch); a forest describes one "
                "sample: decollate first (monai.data.decollate_batch) and depatch each sample with its own record."
            )
        shape = raw["spatial_shape"].reshape(-1)
        n = int(raw["num_leaves"].reshape(-1)[0])
        length = int(raw["length"].reshape(-1)[0])
        if shape.size not in (2, 3) or starts_raw.size % shape.size or sizes_raw.size != starts_raw.size:
            raise ValueError(
                f"forest info is inconsistent: spatial_shape {shape.tolist()}, starts {starts_raw.shape}, "
                f"sizes {sizes_raw.shape}; expected (L, D) boxes for D = 2 or 3."
            )
        starts, sizes = starts_raw.reshape(-1, shape.size), sizes_raw.reshape(-1, shape.size)
        if not 0 <= n <= starts.shape[0]:
            raise ValueError(f"forest info says num_leaves={n} but holds {starts.shape[0]} boxes.")
        return cls(starts[:n], sizes[:n], tuple(int(v) for v in shape), length)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Forest):
            return NotImplemented
        return (
            self.spatial_shape == other.spatial_shape
            and self.length == other.length
            and np.array_equal(self.starts, other.starts)
            and np.array_equal(self.sizes, other.sizes)
        )

    def __hash__(self) -> int:  # frozen dataclass with arrays: hash the geometry bytes
        return hash((self.spatial_shape, self.length, self.starts.tobytes(), self.sizes.tobytes()))

    def __repr__(self) -> str:
        return (
            f"Forest(spatial_shape={self.spatial_shape}, length={self.length}, leaves={self.num_leaves}, "
            f"leaf sizes {int(self.sizes.min())}..{int(self.sizes.max())})"
        )


def _check_length(length: int, shape: Sequence[int]) -> None:
    """A leaf holds at least one pixel: more tokens than pixels could only be padding (and the
    ``(C, L, p, ...)`` tokens of such an ``L`` could exhaust the memory before anything else fails)."""
    pixels = math.prod(int(s) for s in shape)
    if length > pixels:
        raise ValueError(
            f"length L={length} exceeds the {pixels} pixels of the image {tuple(int(s) for s in shape)}: "
            "every token is a leaf of at least one pixel; choose L <= the pixel count."
        )


def _check_tiling(starts: np.ndarray, sizes: np.ndarray, shape: tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless the boxes ``(N, D)`` tile ``shape`` exactly (no gap, no overlap).

    ``O(N 2^D log N)``, independent of the image size. Let ``G`` be the number of boxes covering a
    pixel minus one. Its ``D``-fold finite difference (the inclusion-exclusion "corner" transform)
    is ``+-1`` at every box corner (sign ``(-1)^(number of end coordinates)``) minus the image's own
    corners; ``G`` is the prefix sum of that difference. So every pixel is covered exactly once
    (``G == 0``) iff the signed corner counts cancel at every point. Boxes inside the image whose
    volumes add up are not enough: two overlapping leaves and a gap pass that test.
    """
    ndim = len(shape)
    corner_bits = np.array(list(itertools.product((0, 1), repeat=ndim)), dtype=np.int64)  # (2^D, D)
    signs = (-1) ** corner_bits.sum(1)
    points = np.where(corner_bits[None].astype(bool), (starts + sizes)[:, None, :], starts[:, None, :])
    image_points = corner_bits * np.asarray(shape, dtype=np.int64)
    points = np.concatenate([points.reshape(-1, ndim), image_points])
    weights = np.concatenate([np.tile(signs, starts.shape[0]), -signs])
    keys = np.ravel_multi_index(tuple(points.T), tuple(s + 1 for s in shape))
    order = np.argsort(keys, kind="stable")
    keys, weights = keys[order], weights[order]
    first = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    totals = np.add.reduceat(weights, first)
    if totals.any():
        where = np.unravel_index(int(keys[first[np.flatnonzero(totals)[0]]]), tuple(s + 1 for s in shape))
        raise ValueError(
            f"forest leaves must tile spatial_shape {shape} exactly: they overlap or leave a gap "
            f"(first mismatch at the box corner {tuple(int(v) for v in where)})."
        )


# ---------------------------------------------------------------------------------------------
# axis partitions and the count pyramid


def _root_counts(shape: Sequence[int], length: int, min_size: int, rel: Sequence[float] | None = None) -> list[int]:
    """Roots per axis, at most ``length`` of them.

    When nodes can be split (every side at least ``2 * min_size``), near-cubic roots of the shortest
    side, so that leaves stay near-square. When they cannot (an axis too short to halve), roots are
    the only leaves: as many as the budget and ``min_size`` allow. Either way, a grid over the budget
    is shrunk proportionally, then grown back greedily to the largest product within the budget.
    With an anisotropic relative spacing ``rel``, roots are near-cubic in millimetres instead whenever
    some axis can be halved (:func:`~monai_shf.forest.spacing.physical_root_limits`).
    """
    if rel is not None and max(shape) >= 2 * min_size:
        limits = physical_root_limits(shape, min_size, rel)
    elif min(shape) >= 2 * min_size:
        side = min(shape)
        limits = [max(1, s // side) for s in shape]
    else:
        limits = [max(1, s // min_size) for s in shape]
    counts = list(limits)
    if math.prod(counts) > length:
        scale = (length / math.prod(counts)) ** (1.0 / len(counts))
        counts = [max(1, int(c * scale)) for c in counts]
        while math.prod(counts) > length:  # float rounding
            counts[counts.index(max(counts))] -= 1
        while True:  # grow the axis that keeps the product largest within the budget
            grown = [
                (math.prod(counts) // counts[a] * (counts[a] + 1), a)
                for a in range(len(counts))
                if counts[a] < limits[a] and math.prod(counts) // counts[a] * (counts[a] + 1) <= length
            ]
            if not grown:
                break
            counts[max(grown)[1]] += 1
    return counts


def _axis_bounds(size: int, roots: int, min_size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Interval boundaries of every depth along one axis and which intervals may be halved.

    Returns ``bounds[d]`` (``roots * 2**d + 1`` int64 boundaries) and ``splittable[d]`` (bool per
    interval), for depths ``0..`` until no interval can be halved any more.
    """
    b = np.round(np.linspace(0, size, roots + 1)).astype(np.int64)
    bounds, splittable = [b], []
    while True:
        lengths = np.diff(b)
        can = lengths >= 2 * min_size
        splittable.append(can)
        if not can.any():
            return bounds, splittable
        mids = b[:-1] + lengths // 2
        nb = np.empty(2 * (b.size - 1) + 1, dtype=np.int64)
        nb[0::2] = b
        nb[1::2] = mids
        b = nb
        bounds.append(b)


def _depth_grids(
    axes: list[tuple[list[np.ndarray], list[np.ndarray]]], schedule: Sequence[Sequence[int]]
) -> tuple[list[list[np.ndarray]], list[list[np.ndarray]]]:
    """Per axis and depth ``d = 0..len(schedule)``: the interval grid and which intervals can be halved,
    from the per-halving ones of :func:`_axis_bounds` (shared, never copied) and the axes each depth
    halves."""
    ndim = len(axes)
    halvings = np.zeros((len(schedule) + 1, ndim), dtype=np.int64)  # times each axis was halved above d
    for d, split_axes in enumerate(schedule):
        halvings[d + 1] = halvings[d]
        halvings[d + 1, list(split_axes)] += 1
    bounds = [[axes[a][0][h] for h in halvings[:, a]] for a in range(ndim)]
    can = [[axes[a][1][h] for h in halvings[:, a]] for a in range(ndim)]
    return bounds, can


def _halvings(can: list[np.ndarray], any_interval: bool) -> int:
    """How many times an axis's intervals can be halved: while any of them can (``any_interval``, the
    voxel-cube forest, where an axis that runs out stops the tree), or while all of them can (an
    anisotropic forest goes on along the other axes, so an axis whose intervals only partly can be
    halved any more is left as it is rather than blocking the others' nodes)."""
    if any_interval:
        return len(can) - 1
    return next(h for h, c in enumerate(can) if not c.all())


def _sum_dtype(max_value: float, kind: str) -> np.dtype:
    if kind == "f":
        return np.dtype(np.float64)
    for dt in (np.uint8, np.uint16, np.uint32):
        if max_value <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.int64)


def _interval_sums(x: np.ndarray, bounds: np.ndarray, axis: int, max_value: float) -> tuple[np.ndarray, float]:
    """Sums of ``x`` over the intervals ``[bounds[i], bounds[i+1])`` along ``axis``.

    Works for any interval lengths (zero included) in ``O(x.size)``: the ``j``-th element of every
    interval is taken with one vectorised ``take`` per ``j``; intervals that are shorter are masked.
    Uniform intervals (the common power-of-two case) use strided slices instead of ``take``.
    Returns the sums and the largest value they can hold (to pick the next accumulator dtype).
    """
    starts, lengths = bounds[:-1], np.diff(bounds)
    longest = int(lengths.max())
    new_max = max_value * longest
    dtype = _sum_dtype(new_max, x.dtype.kind)
    n = starts.size
    if longest > 0 and lengths.min() == longest and starts[0] == 0:
        # uniform intervals: strided slices, no gathering
        def part(j: int) -> np.ndarray:
            index = [slice(None)] * x.ndim
            index[axis] = slice(j, j + longest * n, longest)
            return x[tuple(index)]

        if longest == 1:
            return part(0).astype(dtype), new_max
        # same-dtype adds take numpy's fast vectorised loops; ask for a cast only when needed
        # (the dtype holds every sum by construction, so the casts below are safe)
        out = np.add(part(0), part(1)) if dtype == x.dtype else np.add(part(0), part(1), dtype=dtype, casting="unsafe")
        for j in range(2, longest):
            np.add(out, part(j), out=out, casting="unsafe")
        return out, new_max
    out_shape = list(x.shape)
    out_shape[axis] = n
    out = np.zeros(out_shape, dtype=dtype)
    mask_shape = [1] * x.ndim
    mask_shape[axis] = n
    for j in range(longest):
        part_j = np.take(x, np.minimum(starts + j, x.shape[axis] - 1), axis=axis)
        present = (lengths > j).reshape(mask_shape)
        out += np.where(present, part_j, 0).astype(dtype, copy=False)
    return out, new_max


def _pair_sums(c: np.ndarray, max_value: float, axes: Sequence[int]) -> tuple[np.ndarray, float]:
    """Sum adjacent pairs along ``axes`` (those the parents' depth halves): the scores of the parents
    of a count grid."""
    for axis in axes:
        max_value *= 2
        dtype = _sum_dtype(max_value, c.dtype.kind)
        even = [slice(None)] * c.ndim
        odd = [slice(None)] * c.ndim
        even[axis], odd[axis] = slice(0, None, 2), slice(1, None, 2)
        c = (
            np.add(c[tuple(even)], c[tuple(odd)])
            if dtype == c.dtype
            else np.add(c[tuple(even)], c[tuple(odd)], dtype=dtype)
        )
    return c, max_value


def _count_pyramid(
    score: np.ndarray, bounds: list[list[np.ndarray]], depth: int, schedule: Sequence[Sequence[int]]
) -> list[np.ndarray]:
    """``C[d]`` for ``d = 0..depth``: block sums of ``score`` over the depth-``d`` interval grid
    (``schedule[d]``: the axes that depth ``d`` halves)."""
    binary = score.dtype == bool
    if binary:
        score = score.view(np.uint8)
    max_value = 1.0 if binary else float(score.max()) if score.dtype.kind != "f" else 0.0
    if max_value * score.size >= 2.0**63:  # the root's sum must fit the int64 accumulator
        raise ValueError(
            f"integer score sums can exceed int64: max score {int(score.max())} times {score.size} pixels; "
            "rescale the score map (e.g. to uint8) or pass it as float."
        )
    counts = score
    for axis in range(score.ndim):
        counts, max_value = _interval_sums(counts, bounds[axis][depth], axis, max_value)
    pyramid = [counts]
    for d in range(depth - 1, -1, -1):
        counts, max_value = _pair_sums(counts, max_value, schedule[d])
        pyramid.append(counts)
    return pyramid[::-1]


class _LazyPyramid:
    """``pyramid[d]`` for ``d = 0..depth``, the finest levels computed only when first read.

    Dense edges (textured tissue) never split nodes deep down: the ``K`` best scores are all in
    shallow nodes, and the edge phase stops reading the pyramid where every node is below the
    ``K``-th best score. For such score maps the levels down to ``depth - _LAZY_LEVELS`` are summed
    straight from the image (one pass, whose blocks are 4**_LAZY_LEVELS times larger than the
    finest ones: a smaller first grid and fewer pair sums) and the finer levels only if the edge
    phase reads them (then the whole pyramid is summed from the image as usual). Sums are integers,
    so both routes give the same values. Sparse score maps (edge fraction below
    ``_DENSE_FRACTION`` in a sample of rows), which do split deep, and float scores (whose sums would
    round differently) take the finest level at once.
    """

    def __init__(
        self, score: np.ndarray, bounds: list[list[np.ndarray]], depth: int, schedule: Sequence[Sequence[int]]
    ):
        self.score, self.bounds, self.depth, self.schedule = score, bounds, depth, schedule
        coarse = depth - _LAZY_LEVELS
        sample = score[:: max(1, score.shape[0] // 64)]
        dense = score.dtype.kind in "bui" and coarse >= 0 and np.count_nonzero(sample) >= _DENSE_FRACTION * sample.size
        self.levels = _count_pyramid(score, bounds, coarse if dense else depth, schedule)

    def __getitem__(self, d: int) -> np.ndarray:
        if d >= len(self.levels):
            self.levels = _count_pyramid(self.score, self.bounds, self.depth, self.schedule)
        return self.levels[d]


# levels left to compute lazily for dense score maps, and what "dense" means (fraction of non-zero pixels)
_LAZY_LEVELS = 2
_DENSE_FRACTION = 0.01


# ---------------------------------------------------------------------------------------------
# the build


def _as_score(score: Any) -> np.ndarray:
    check_array(score, "score", ndims=(2, 3))
    s = to_numpy(score)
    if s.dtype.kind in "if" and (s < 0).any():
        raise ValueError("score must be non-negative (an edge map or edge strength).")
    if s.dtype.kind == "f" and s.dtype != np.float64:
        s = s.astype(np.float64)
    return s


def build_forest(
    score: Any, spec: ForestSpec | Mapping[str, Any] | int | None = None, *, spacing: Any = None, **options: Any
) -> Forest:
    """Build the hierarchical forest of ``score`` with exactly ``spec.length`` tokens.

    Args:
        score: spatial ``(H, W)`` or ``(H, W, D)`` non-negative array or tensor, typically the
            :func:`~monai_shf.forest.soft_edge_map` of the image (uint8, 255 per full edge pixel: the
            transforms' default) or its :func:`~monai_shf.forest.edge_map` (bool Canny edges, the
            paper's: a node's score is its edge-pixel count). Not modified. A tensor on a CUDA (or
            other) device is built there (:func:`~monai_shf.forest.torch_forest.build_forests`, the same
            forest).
        spec: the :class:`~monai_shf.forest.ForestSpec` (or a mapping of its options, or the length ``L``
            alone). Used here: ``length``, ``min_size`` (must not exceed every side of the image),
            ``fill``, ``criterion`` (``"error"``: the depatching error a split removes,
            ``score * side + area_prior * volume``, zero once ``side <= patch_size``; ``"edges"``: the
            paper's, the score alone; see the module docstring), ``patch_size`` and ``area_prior``. Its
            edge options and pyramid options describe how ``score`` was made and are not used here.
        spacing: the voxel size along each of the ``D`` axes (e.g. millimetres, any unit), or ``None``.
            Anisotropic: leaves are boxes kept near-cubic in that unit (roots near-cubic, each depth
            halving only the physically long axes; see :mod:`monai_shf.forest.spacing`) and the
            ``"error"`` criterion measures the longest side physically (in voxels of the finest axis).
            ``None`` or isotropic: the voxel-cube forest. Entries must be finite and ``> 0``.
        options: forest options set on top of ``spec`` (e.g. ``build_forest(edges, 1024, min_size=4)``).

    Returns:
        the :class:`Forest`, leaves in Z-order; exactly ``length`` tokens (padding only where no split
        fits the budget left: at most ``2**D - 2`` tokens when the image has room, or by ``fill="pad"``).
    """
    # a CUDA (or other device) tensor: the torch build, on its device; spacing-aware forests have the numpy
    # build only, so an anisotropic one copies the score map (1 byte per voxel for soft edges) to the host
    if _device.on_accelerator(score) and relative_spacing(spacing, score.ndim) is None:
        from .torch_forest import build_forest_torch

        return build_forest_torch(score, spec, **options)
    spec = ForestSpec.create(spec, **options)
    s = _as_score(score)
    length, min_size, fill, criterion = spec.length, spec.min_size, spec.fill, spec.criterion
    patch_size, area_prior = spec.patch_size, spec.area_prior
    shape = s.shape
    if min_size > max(shape):
        raise ValueError(f"min_size ({min_size}) is larger than every side of the image {tuple(shape)}.")
    _check_length(length, shape)
    ndim = s.ndim
    rel = relative_spacing(spacing, ndim)
    roots = _root_counts(shape, length, min_size, rel)
    axes = [_axis_bounds(shape[a], roots[a], min_size) for a in range(ndim)]
    # the axes each depth halves: all of them (voxel cubes), or the physically long ones; a node of
    # depth d can be split only if all of those can, so the tree is at most len(schedule) deep
    schedule = split_schedule([_halvings(c, rel is None) for _, c in axes], shape, roots, rel)
    max_depth = len(schedule)
    bounds, can = _depth_grids(axes, schedule)
    # scores are needed for the nodes that may be split, i.e. down to depth max_depth - 1 only:
    # the finest grid (the largest) is never read
    pyramid = _LazyPyramid(s, bounds, max(max_depth - 1, 0), schedule)

    grid = _Grid(bounds, can, roots, schedule)
    budget = length - math.prod(roots)  # tokens the splits may add
    if criterion == "edges":
        priority = _edge_priority(pyramid)
    else:
        priority = _error_priority(grid, pyramid, patch_size, float(area_prior), rel)
    split = _priority_splits(grid, priority, budget)
    left = budget - grid.cost(split)
    if left > 0 and rel is not None:  # cheaper splits (fewer axes) may still fit what is left
        extra = _leftover_splits(grid, split, priority, left)
        split, left = split.concat(extra), left - grid.cost(extra)
    if fill == "uniform" and left > 0:
        split = split.concat(_fill_splits(grid, split, left))
    starts, ends = grid.leaves(split)
    return Forest._from_build(starts, ends - starts, tuple(int(x) for x in shape), length)


def edge_forest(
    image: Any,
    spec: ForestSpec | Mapping[str, Any] | int | None = None,
    score: Any = None,
    *,
    spacing: Any = None,
    **options: Any,
) -> Forest:
    """The forest of a ``(C, *spatial)`` image: its score map (``spec.edges``, or the given ``score``), then
    :func:`build_forest` with ``spec`` (plus ``options``, flat names) and the image's voxel ``spacing``
    (``D`` entries or ``None``; see :func:`build_forest`).

    ``score`` may be ``(*spatial)`` or ``(1, *spatial)``; when given, no edges are computed. A device tensor
    is copied to the host once for OpenCV's Canny, and its edges go straight into the build (soft edges
    of a device tensor are computed on the device, and the forest built there).
    """
    spec = ForestSpec.create(spec, **options)
    check_spacing(spacing, len(image.shape) - 1)  # before the edges are computed
    if score is None:
        # soft edges of a device tensor are computed on the device; OpenCV/ITK's Canny needs the host
        keep = _device.on_accelerator(image) and spec.edges.edge_kind == "soft"
        host = image if keep else to_numpy(image) if hasattr(image, "detach") else image
        score = score_map(host, spec.edges)
    elif score.ndim == image.ndim:
        if score.shape[0] != 1:
            raise ValueError(f"a score map must have one channel, got shape {tuple(score.shape)}.")
        score = score[0]
    if tuple(score.shape) != tuple(image.shape[1:]):
        raise ValueError(
            f"score map shape {tuple(score.shape)} does not match the image's spatial shape {tuple(image.shape[1:])}."
        )
    return build_forest(score, spec, spacing=spacing)


class _Nodes:
    """A set of nodes as arrays: ``depth (n,)`` and ``index (n, D)`` (cell of the depth's grid)."""

    def __init__(self, depth: np.ndarray, index: np.ndarray):
        self.depth, self.index = depth, index

    @property
    def size(self) -> int:
        return int(self.depth.size)

    def take(self, rows: np.ndarray) -> _Nodes:
        return _Nodes(self.depth[rows], self.index[rows])

    def concat(self, other: _Nodes) -> _Nodes:
        return _Nodes(np.concatenate([self.depth, other.depth]), np.concatenate([self.index, other.index]))

    @staticmethod
    def empty(ndim: int) -> _Nodes:
        return _Nodes(np.zeros(0, np.int64), np.zeros((0, ndim), np.int64))


class _Grid:
    """Per-depth interval grids of a forest: splittability, volumes, Z-codes, children, leaves.

    ``bounds[a][d]``/``can[a][d]``: the interval boundaries of axis ``a`` at depth ``d`` and which of
    its intervals can be halved; ``schedule[d]``: the axes depth ``d`` halves (a split of a depth-``d``
    node makes ``2**len(schedule[d])`` children)."""

    def __init__(
        self,
        bounds: list[list[np.ndarray]],
        can: list[list[np.ndarray]],
        roots: list[int],
        schedule: Sequence[Sequence[int]],
    ):
        self.bounds, self.can, self.roots = bounds, can, roots
        self.schedule = [tuple(axes) for axes in schedule]
        self.max_depth = len(self.schedule)
        self.ndim = len(bounds)
        # child k of cell i is cell 2 i + offsets[d][k] along the halved axes, i along the others
        # (Z-order: of the halved axes, the first is the most significant bit)
        self.offsets = []
        for axes in self.schedule:
            k = np.arange(2 ** len(axes))
            offsets = np.zeros((k.size, self.ndim), dtype=np.int64)
            for j, a in enumerate(axes):
                offsets[:, a] = (k >> (len(axes) - 1 - j)) & 1
            self.offsets.append(offsets)
        # Z-code bits below depth d's: one per axis halved by the deeper depths
        bits = [len(axes) for axes in self.schedule]
        self.low_bits = [sum(bits[d + 1 :]) for d in range(self.max_depth)]
        self.total_bits = sum(bits)
        self.costs = np.array([2 ** len(axes) - 1 for axes in self.schedule] + [0], dtype=np.int64)
        # codes are shifted by 6 more bits to be paired with depths: keep them under 57 bits
        if self.total_bits + max(1, math.prod(roots)).bit_length() > 56:
            raise ValueError("image too large for 64-bit Z-codes; raise min_size.")

    def cost(self, nodes: _Nodes) -> int:
        """Leaves added by splitting ``nodes``: ``2**k - 1`` for a node whose depth halves ``k`` axes."""
        return int(self.costs[nodes.depth].sum())

    def level(self, depth: int, nodes_index: np.ndarray, arrays: list[list[np.ndarray]]) -> list[np.ndarray]:
        return [arrays[a][depth][nodes_index[:, a]] for a in range(self.ndim)]

    def splittable(self, depth: int, index: np.ndarray) -> np.ndarray:
        if depth >= self.max_depth:
            return np.zeros(len(index), dtype=bool)
        return np.logical_and.reduce([self.can[a][depth][index[:, a]] for a in self.schedule[depth]])

    def sides(self, depth: int, index: np.ndarray) -> np.ndarray:
        """``(n, D)`` int64 extents of the cells ``index`` of ``depth``."""
        return np.stack([np.diff(self.bounds[a][depth])[index[:, a]] for a in range(self.ndim)], axis=1)

    def volume(self, depth: int, index: np.ndarray) -> np.ndarray:
        v = np.ones(len(index), dtype=np.int64)
        for a in range(self.ndim):
            v *= np.diff(self.bounds[a][depth])[index[:, a]]
        return v

    def children(self, depth: int, index: np.ndarray) -> np.ndarray:
        """``(n * 2^k, D)`` child cells at ``depth + 1``, each parent's children together, in Z-order."""
        offsets = self.offsets[depth]
        scale = np.ones(self.ndim, dtype=np.int64)
        scale[list(self.schedule[depth])] = 2
        return (scale * index[:, None, :] + offsets[None]).reshape(-1, self.ndim)

    def codes(self, nodes: _Nodes) -> np.ndarray:
        """Z-codes: root (row-major) then one bit per halved axis and depth; a node's code is that of
        its first descendant, so sorting leaves by code gives the depth-first (Morton) order."""
        out = np.zeros(nodes.size, dtype=np.int64)
        for d in np.unique(nodes.depth):
            d = int(d)
            rows = nodes.depth == d
            index = nodes.index[rows]
            # times each axis was halved above depth d: the low bits of its index are local
            halved = np.zeros(self.ndim, dtype=np.int64)
            for axes in self.schedule[:d]:
                halved[list(axes)] += 1
            root = np.ravel_multi_index(tuple((index >> halved).T), self.roots)
            code = np.zeros(len(index), dtype=np.int64)
            seen = np.zeros(self.ndim, dtype=np.int64)
            for j, axes in enumerate(self.schedule[:d]):
                seen[list(axes)] += 1
                for m, a in enumerate(axes):
                    bit = (index[:, a] >> (halved[a] - seen[a])) & 1
                    code |= bit << (self.low_bits[j] + len(axes) - 1 - m)
            out[rows] = (root << self.total_bits) | code
        return out

    def roots_nodes(self) -> _Nodes:
        index = np.array(list(np.ndindex(*self.roots)), dtype=np.int64).reshape(-1, self.ndim)
        return _Nodes(np.zeros(len(index), dtype=np.int64), index)

    def children_of(self, nodes: _Nodes) -> _Nodes:
        """All children of ``nodes`` (of any depths)."""
        out = _Nodes.empty(self.ndim)
        for d in np.unique(nodes.depth):
            kids = self.children(int(d), nodes.index[nodes.depth == d])
            out = out.concat(_Nodes(np.full(len(kids), d + 1, dtype=np.int64), kids))
        return out

    def frontier(self, split: _Nodes) -> tuple[_Nodes, np.ndarray]:
        """The leaves left by splitting ``split``: the roots and the children of split nodes, minus
        the split nodes; with their Z-codes."""
        nodes = self.roots_nodes().concat(self.children_of(split))
        codes = self.codes(nodes)
        if split.size:
            # a node is identified by (code, depth): its code is shared with its first descendants
            keep = ~np.isin((codes << 6) | nodes.depth, (self.codes(split) << 6) | split.depth)
            nodes, codes = nodes.take(np.flatnonzero(keep)), codes[keep]
        return nodes, codes

    def leaves(self, split: _Nodes) -> tuple[np.ndarray, np.ndarray]:
        """Leaf boxes ``(starts, ends)`` in Z-order."""
        leaves, codes = self.frontier(split)
        leaves = leaves.take(np.argsort(codes, kind="stable"))
        starts, ends = np.empty_like(leaves.index), np.empty_like(leaves.index)
        for d in np.unique(leaves.depth):
            rows = leaves.depth == d
            for a in range(self.ndim):
                starts[rows, a] = self.bounds[a][d][leaves.index[rows, a]]
                ends[rows, a] = self.bounds[a][d][leaves.index[rows, a] + 1]
        return starts, ends


def _edge_priority(pyramid: list[np.ndarray]) -> Callable[[int, np.ndarray], np.ndarray]:
    """``criterion="edges"``: a node's priority is its score (the paper's edge-pixel count)."""

    def priority(depth: int, index: np.ndarray) -> np.ndarray:
        return pyramid[depth][tuple(index.T)].astype(np.float64)

    return priority


def _error_priority(
    grid: _Grid,
    pyramid: list[np.ndarray],
    patch_size: int | None,
    area_prior: float,
    rel: Sequence[float] | None = None,
) -> Callable[[int, np.ndarray], np.ndarray]:
    """``criterion="error"``: ``score * side + area_prior * volume``, zero once ``side <= patch_size``.

    ``side`` is the node's longest side. Strictly smaller for a child than for its parent whenever
    the parent's is positive (see the module docstring). With a relative spacing ``rel`` the side
    that weighs the score is the longest in physical units (voxels of the finest axis: the blur a
    leaf leaves on a boundary, in millimetres); the cap still compares voxels with the token side (a
    node no larger than the token along every axis is at full resolution). Neither grows from a
    parent to its children, and the halved axes include the physically longest one."""
    weights = None if rel is None else np.asarray(rel, dtype=np.float64)

    def priority(depth: int, index: np.ndarray) -> np.ndarray:
        sides = grid.sides(depth, index)
        side = sides.max(axis=1).astype(np.float64)
        physical = side if weights is None else (sides * weights).max(axis=1)
        out = pyramid[depth][tuple(index.T)].astype(np.float64) * physical
        if area_prior:
            out += area_prior * sides.prod(axis=1).astype(np.float64)
        if patch_size is not None:
            out[side <= patch_size] = 0.0
        return out

    return priority


def _priority_splits(grid: _Grid, priority: Callable[[int, np.ndarray], np.ndarray], budget: int) -> _Nodes:
    """The nodes split by the priority phase: the longest run of first positive-priority splittable
    nodes of the full tree in (priority desc, volume desc, Z-order) order whose splits add at most
    ``budget`` leaves (``grid.cost``; ``budget // (2**D - 1)`` nodes when every depth halves every axis).

    ``priority(depth, index)`` gives the float64 priorities of cells of one depth; it must never be
    larger for a child than for its parent (both criteria guarantee it, see the module docstring).
    Then that order never puts a child before its parent, so its first ``K`` nodes are exactly what
    a best-first heap would split. They are found level by level: a node whose priority is below the
    ``K``-th best priority collected so far cannot be among them, nor can its descendants
    (priorities only shrink downwards), so the frontier stays ``O(K)`` per level. ``K`` is the most
    nodes the budget can pay for, at the cheapest split of the tree.
    """
    max_splits = budget // int(grid.costs[: grid.max_depth].min()) if grid.max_depth else 0
    depth_parts, index_parts, score_parts = [], [], []
    threshold = 0.0  # priorities must exceed it (the priority phase takes positive ones only)
    inclusive = False
    frontier = grid.roots_nodes().index
    collected = np.zeros(0)
    for d in range(grid.max_depth):
        scores = priority(d, frontier)
        keep = ((scores >= threshold) if inclusive else (scores > threshold)) & grid.splittable(d, frontier)
        frontier, scores = frontier[keep], scores[keep]
        if not len(frontier):
            break
        depth_parts.append(np.full(len(frontier), d, dtype=np.int64))
        index_parts.append(frontier)
        score_parts.append(scores)
        collected = np.concatenate([collected, scores])
        if max_splits and collected.size >= max_splits:
            kth = float(np.partition(collected, collected.size - max_splits)[collected.size - max_splits])
            if kth > threshold or not inclusive:
                threshold, inclusive = max(kth, threshold), True
        frontier = grid.children(d, frontier)
    if not depth_parts or max_splits == 0:
        return _Nodes.empty(grid.ndim)
    nodes = _Nodes(np.concatenate(depth_parts), np.concatenate(index_parts))
    if grid.cost(nodes) <= budget:
        return nodes
    scores = np.concatenate(score_parts)
    volumes = np.concatenate(
        [grid.volume(int(d), i) for d, i in zip(np.concatenate([p[:1] for p in depth_parts]), index_parts)]
    )
    order = np.lexsort((grid.codes(nodes), -volumes, -scores))[:max_splits]
    spent = np.cumsum(grid.costs[nodes.depth[order]])
    return nodes.take(order[: int(np.searchsorted(spent, budget, side="right"))])


def _frontier_scores(
    grid: _Grid, leaves: _Nodes, priority: Callable[[int, np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Priority, volume, splittability and split cost of every node of ``leaves``."""
    scores = np.zeros(leaves.size)
    volumes = np.zeros(leaves.size, dtype=np.int64)
    splittable = np.zeros(leaves.size, dtype=bool)
    for d in np.unique(leaves.depth):
        rows = leaves.depth == d
        index = leaves.index[rows]
        splittable[rows] = grid.splittable(int(d), index)
        volumes[rows] = grid.volume(int(d), index)
        if d < grid.max_depth:
            scores[rows] = priority(int(d), index)
    return scores, volumes, splittable, grid.costs[leaves.depth]


def _leftover_splits(
    grid: _Grid, split: _Nodes, priority: Callable[[int, np.ndarray], np.ndarray], budget: int
) -> _Nodes:
    """Splits that still fit the ``budget`` (fewer leaves than the next split in order adds): the best
    leaves (priority, volume, Z-order) whose split costs at most what is left, one at a time, as a
    best-first heap that skips the splits it cannot pay for would take them. Only for trees whose
    depths halve different numbers of axes: ``budget < 2**D - 1``, so at most ``2**D - 2`` rounds."""
    chosen = _Nodes.empty(grid.ndim)
    while budget > 0:
        leaves, codes = grid.frontier(split.concat(chosen))
        scores, volumes, splittable, costs = _frontier_scores(grid, leaves, priority)
        ok = np.flatnonzero(splittable & (scores > 0) & (costs <= budget))
        if not ok.size:
            break
        best = ok[np.lexsort((codes[ok], -volumes[ok], -scores[ok]))[0]]
        chosen = chosen.concat(leaves.take(np.array([best])))
        budget -= int(costs[best])
    return chosen


def _fill_splits(grid: _Grid, split: _Nodes, budget: int) -> _Nodes:
    """Uniform refinement of what the edge phase left: split the largest splittable leaves first
    (ties in Z-order), round by round, one volume at a time, while their splits fit the ``budget``
    (leaves to add); a split that does not fit is skipped for the cheaper ones after it."""
    pool, _ = grid.frontier(split)
    chosen = []
    while budget > 0 and pool.size:
        splittable = np.zeros(pool.size, dtype=bool)
        volumes = np.zeros(pool.size, dtype=np.int64)
        for d in np.unique(pool.depth):
            rows = pool.depth == d
            splittable[rows] = grid.splittable(int(d), pool.index[rows])
            volumes[rows] = grid.volume(int(d), pool.index[rows])
        pool, volumes = pool.take(np.flatnonzero(splittable)), volumes[splittable]
        if not pool.size:
            break
        largest = np.flatnonzero(volumes == volumes.max())
        largest = largest[np.argsort(grid.codes(pool.take(largest)), kind="stable")]
        top = _affordable(grid.costs[pool.depth[largest]], budget, largest)
        now = pool.take(top)
        chosen.append(now)
        budget -= grid.cost(now)
        # the largest leaves leave the pool, split or not: one that did not fit never will (the
        # budget only shrinks), and the smaller ones after it may be cheaper
        rest = np.ones(pool.size, dtype=bool)
        rest[largest] = False
        pool = pool.take(np.flatnonzero(rest)).concat(grid.children_of(now))
    out = _Nodes.empty(grid.ndim)
    for c in chosen:
        out = out.concat(c)
    return out


def _affordable(costs: np.ndarray, budget: int, items: np.ndarray) -> np.ndarray:
    """The ``items`` (in their order) that a greedy pass paying ``costs`` from ``budget`` takes: the
    longest affordable run, then each later item that still fits (few: what is left is below the
    next cost, so at most ``2**D - 2`` more)."""
    spent = np.cumsum(costs)
    n = int(np.searchsorted(spent, budget, side="right"))
    taken = list(items[:n])
    left = budget - (int(spent[n - 1]) if n else 0)
    rest = np.arange(n, costs.size)
    while left > 0 and rest.size:
        fits = rest[costs[rest] <= left]
        if not fits.size:
            break
        taken.append(items[fits[0]])
        left -= int(costs[fits[0]])
        rest = rest[rest > fits[0]]
    return np.asarray(taken, dtype=np.int64)
