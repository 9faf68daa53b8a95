"""The hierarchical forest built with torch ops on the score's device (CUDA or CPU), batched.

The same algorithm as :func:`monai_shf.forest.build_forest`, step by step, so that the forests are
equal by construction (tested on CPU for many shapes, lengths, criteria and fill modes):

1. the shape-only geometry (roots, per-depth interval bounds, splittability) is the numpy build's own
   (a few hundred integers, computed on the host from the shape);
2. the count pyramid is summed on the device in the numpy build's order: interval sums of the finest
   splittable depth (one strided slice, or one gather for uneven intervals, per interval position),
   then pairwise sums per axis. Integer scores give the same integers; float scores (float64) the same
   floats, since every addition is the numpy build's addition in the same order;
3. priorities (``"error"``: ``score * side + area_prior * volume``, 0 once ``side <= patch_size``;
   ``"edges"``: the score) in float64, like the numpy build;
4. the level-synchronous selection of the splits with the per-sample threshold of the ``K``-th best
   priority seen so far, then the final order (priority desc, volume desc, Z-code);
5. ``fill="uniform"``: the largest splittable leaves, round by round, ties in Z-order;
6. the leaves (roots and children of split nodes, minus the split nodes) sorted by Z-code.

Every sample of a batch runs through one set of kernels (a batch index travels with every node);
the only host transfers are the per-level "is anything left" checks and the final leaf boxes
(``(N, D)`` integers per sample), which :class:`~monai_shf.forest.Forest` holds as numpy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .spec import ForestSpec
from .tree import Forest, _axis_bounds, _check_length, _root_counts

__all__ = ["build_forests", "build_forest_torch"]

# int dtypes for the pyramid's integer sums, smallest first (sums are exact in any of them)
_INT_DTYPES = ((torch.uint8, 255), (torch.int16, 2**15 - 1), (torch.int32, 2**31 - 1))
_WIDE_UNSIGNED = tuple(getattr(torch, name) for name in ("uint16", "uint32", "uint64") if hasattr(torch, name))


def _sum_dtype(max_value: float, floating: bool) -> torch.dtype:
    if floating:
        return torch.float64
    for dtype, top in _INT_DTYPES:
        if max_value <= top:
            return dtype
    return torch.int64


def _as_scores(scores: Any) -> torch.Tensor:
    """``scores`` checked to be a non-negative ``(B, *spatial)`` tensor; floats as float64."""
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"scores must be a (B, H, W) or (B, H, W, D) torch tensor, got {type(scores).__name__}.")
    x = scores.detach().as_subclass(torch.Tensor)
    if x.is_meta:
        raise ValueError(f"scores is a tensor on the 'meta' device (shape {tuple(x.shape)}): pass real data.")
    if x.ndim not in (3, 4):
        raise ValueError(f"scores must be (B, H, W) or (B, H, W, D), got shape {tuple(x.shape)}.")
    if any(int(s) == 0 for s in x.shape):
        raise ValueError(f"scores must not be empty, got shape {tuple(x.shape)}.")
    if x.is_complex():
        raise TypeError(f"scores must have a bool, integer or float dtype, got {x.dtype}.")
    if x.dtype == torch.bool:
        return x.view(torch.uint8)
    if x.dtype in _WIDE_UNSIGNED:  # torch compares and reduces these only as signed integers
        x = x.to(torch.int32 if x.dtype == torch.uint16 else torch.int64)
    if x.is_floating_point():
        x = x.to(torch.float64)
        if not bool(torch.isfinite(x).all()):
            raise ValueError("scores must be finite (no NaN or inf).")
    if bool((x < 0).any()):
        raise ValueError("score must be non-negative (an edge map or edge strength).")
    return x


def _interval_sums(x: torch.Tensor, bounds: np.ndarray, axis: int, max_value: float) -> tuple[torch.Tensor, float]:
    """Sums of ``x`` over ``[bounds[i], bounds[i+1])`` along ``axis``, added in the numpy build's order."""
    starts, lengths = bounds[:-1], np.diff(bounds)
    longest = int(lengths.max())
    new_max = max_value * longest
    dtype = _sum_dtype(new_max, x.is_floating_point())
    n = starts.size
    if longest > 0 and lengths.min() == longest and starts[0] == 0:

        def part(j: int) -> torch.Tensor:
            return x.narrow(axis, j, longest * (n - 1) + 1)[(slice(None),) * axis + (slice(None, None, longest),)]

        if longest == 1:
            return part(0).to(dtype), new_max
        out = part(0).to(dtype) + part(1).to(dtype)
        for j in range(2, longest):
            out += part(j)
        return out, new_max
    shape = list(x.shape)
    shape[axis] = n
    out = torch.zeros(shape, dtype=dtype, device=x.device)
    mask_shape = [1] * x.ndim
    mask_shape[axis] = n
    starts_t = torch.as_tensor(starts, device=x.device)
    lengths_t = torch.as_tensor(lengths, device=x.device).view(mask_shape)
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    for j in range(longest):
        part_j = x.index_select(axis, torch.clamp(starts_t + j, max=x.shape[axis] - 1))
        out += torch.where(lengths_t > j, part_j, zero).to(dtype)
    return out, new_max


def _pair_sums(c: torch.Tensor, max_value: float) -> tuple[torch.Tensor, float]:
    """Adjacent pairs summed along every spatial axis (axis 0 is the batch)."""
    for axis in range(1, c.ndim):
        max_value *= 2
        dtype = _sum_dtype(max_value, c.is_floating_point())
        even = (slice(None),) * axis + (slice(0, None, 2),)
        odd = (slice(None),) * axis + (slice(1, None, 2),)
        c = c[even].to(dtype) + c[odd].to(dtype)
    return c, max_value


def _count_pyramid(x: torch.Tensor, bounds: list[list[np.ndarray]], depth: int) -> list[torch.Tensor]:
    """``C[d]`` ``(B, *cells of depth d)`` for ``d = 0..depth``: block sums of every sample's score."""
    floating = x.is_floating_point()
    max_value = 0.0 if floating else float(x.max())
    if max_value * math.prod(x.shape[1:]) >= 2.0**63:
        raise ValueError(
            f"integer score sums can exceed int64: max score {int(max_value)} times {math.prod(x.shape[1:])} "
            "pixels; rescale the score map (e.g. to uint8) or pass it as float."
        )
    counts = x
    for a in range(x.ndim - 1):
        counts, max_value = _interval_sums(counts, bounds[a][depth], a + 1, max_value)
    pyramid = [counts]
    for _ in range(depth):
        counts, max_value = _pair_sums(counts, max_value)
        pyramid.append(counts)
    return pyramid[::-1]


class _Geometry:
    """The numpy build's per-depth interval grids as flat device tensors, looked up by (depth, index).

    Nodes are ``(batch (n,), depth (n,), index (n, D))`` int64 tensors; ``depth`` may mix depths."""

    def __init__(self, axes: list[tuple[list[np.ndarray], list[np.ndarray]]], roots: list[int], device: torch.device):
        self.ndim, self.roots, self.device = len(axes), roots, device
        bounds = [b for b, _ in axes]
        self.max_depth = min(len(b) - 1 for b in bounds)
        if self.ndim * self.max_depth + max(1, math.prod(roots)).bit_length() > 56:
            raise ValueError("image too large for 64-bit Z-codes; raise min_size.")

        def flat(levels: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
            offsets = np.concatenate([[0], np.cumsum([len(v) for v in levels])])
            values = np.concatenate(levels) if levels else np.zeros(0)
            return torch.as_tensor(values, device=device), torch.as_tensor(offsets, device=device)

        self.bounds = [flat(b) for b in bounds]
        self.lengths = [flat([np.diff(level) for level in b]) for b in bounds]
        self.can = [flat([c.astype(np.int64) for c in can]) for _, can in axes]
        self.can_depths = [len(can) for _, can in axes]
        k = torch.arange(2**self.ndim, device=device)
        self.offsets = torch.stack([(k >> (self.ndim - 1 - a)) & 1 for a in range(self.ndim)], dim=1)
        # cells per depth, for node ids: ids of (batch, depth, cell) are distinct integers
        cells = [math.prod(r << d for r in roots) for d in range(self.max_depth + 1)]
        self.cell_offsets = torch.as_tensor(np.concatenate([[0], np.cumsum(cells)]), device=device)
        self.total_cells = int(sum(cells))
        self.strides = [
            torch.as_tensor(
                [math.prod(r << d for r in roots[a + 1 :]) for d in range(self.max_depth + 1)], device=device
            )
            for a in range(self.ndim)
        ]
        self.root_strides = [math.prod(roots[a + 1 :]) for a in range(self.ndim)]

    def lookup(
        self, table: tuple[torch.Tensor, torch.Tensor], depth: torch.Tensor, index: torch.Tensor
    ) -> torch.Tensor:
        values, offsets = table
        return values[offsets[depth] + index]

    def sides(self, depth: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.lookup(self.lengths[a], depth, index[:, a]) for a in range(self.ndim)], dim=1)

    def volume(self, depth: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return self.sides(depth, index).prod(dim=1)

    def splittable(self, depth: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ok = depth < self.max_depth
        for a in range(self.ndim):
            d = torch.clamp(depth, max=self.can_depths[a] - 1)
            ok &= self.lookup(self.can[a], d, index[:, a]).bool()
        return ok

    def children(self, batch: torch.Tensor, depth: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Children at ``depth + 1``, each parent's ``2^D`` together, in Z-order."""
        n = 2**self.ndim
        kids = (2 * index[:, None, :] + self.offsets[None]).reshape(-1, self.ndim)
        return batch.repeat_interleave(n), (depth + 1).repeat_interleave(n), kids

    def codes(self, depth: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The numpy build's Z-codes: root (row-major), then ``D`` bits per depth."""
        root = torch.zeros_like(depth)
        for a in range(self.ndim):
            root += (index[:, a] >> depth) * self.root_strides[a]
        local = index & (torch.bitwise_left_shift(torch.ones_like(index), depth[:, None]) - 1)
        code = torch.zeros_like(depth)
        for bit in range(self.max_depth):
            for a in range(self.ndim):
                code |= ((local[:, a] >> bit) & 1) << (self.ndim * bit + self.ndim - 1 - a)
        return (root << (self.ndim * self.max_depth)) | (code << (self.ndim * (self.max_depth - depth)))

    def ids(self, batch: torch.Tensor, depth: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        out = batch * self.total_cells + self.cell_offsets[depth]
        for a in range(self.ndim):
            out += index[:, a] * self.strides[a][depth]
        return out

    def roots_nodes(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(np.array(list(np.ndindex(*self.roots)), dtype=np.int64), device=self.device)
        index = index.reshape(-1, self.ndim)
        batch = torch.arange(batch_size, device=self.device).repeat_interleave(len(index))
        return batch, torch.zeros_like(batch), index.repeat(batch_size, 1)

    def frontier(self, split: tuple[torch.Tensor, ...], batch_size: int) -> tuple[torch.Tensor, ...]:
        """The leaves left by ``split``: roots and children of split nodes, minus the split nodes."""
        roots = self.roots_nodes(batch_size)
        kids = self.children(*split)
        nodes = tuple(torch.cat([r, k]) for r, k in zip(roots, kids))
        keep = ~torch.isin(self.ids(*nodes), self.ids(*split))
        return tuple(v[keep] for v in nodes)


def _order(keys: list[torch.Tensor]) -> torch.Tensor:
    """Indices sorting by ``keys`` (most significant first), like ``np.lexsort(keys[::-1])``."""
    order = torch.arange(keys[0].numel(), device=keys[0].device)
    for key in reversed(keys):
        order = order[torch.sort(key[order], stable=True).indices]
    return order


def _ranks(batch: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Position of every row within its batch, for rows sorted by ``batch``."""
    counts = torch.bincount(batch, minlength=batch_size)
    first = torch.cumsum(counts, 0) - counts
    return torch.arange(batch.numel(), device=batch.device) - first[batch]


def _priority(
    geometry: _Geometry, pyramid: list[torch.Tensor], d: int, batch: torch.Tensor, index: torch.Tensor, spec: ForestSpec
) -> torch.Tensor:
    values = pyramid[d][(batch, *index.unbind(1))].to(torch.float64)
    if spec.criterion == "edges":
        return values
    sides = geometry.sides(torch.full_like(batch, d), index)
    side = sides.max(dim=1).values.to(torch.float64)
    out = values * side
    if spec.area_prior:
        out += float(spec.area_prior) * sides.prod(dim=1).to(torch.float64)
    if spec.patch_size is not None:
        out[side <= spec.patch_size] = 0.0
    return out


def _priority_splits(
    geometry: _Geometry, pyramid: list[torch.Tensor], spec: ForestSpec, max_splits: int, batch_size: int
) -> tuple[torch.Tensor, ...]:
    """The numpy build's ``_priority_splits`` for every sample at once (per-sample thresholds)."""
    device = geometry.device
    threshold = torch.zeros(batch_size, dtype=torch.float64, device=device)
    inclusive = torch.zeros(batch_size, dtype=torch.bool, device=device)
    batch, _, index = geometry.roots_nodes(batch_size)
    parts: list[tuple[torch.Tensor, ...]] = []
    collected_batch = torch.zeros(0, dtype=torch.int64, device=device)
    collected = torch.zeros(0, dtype=torch.float64, device=device)
    for d in range(geometry.max_depth):
        depth = torch.full_like(batch, d)
        scores = _priority(geometry, pyramid, d, batch, index, spec)
        thr, inc = threshold[batch], inclusive[batch]
        keep = torch.where(inc, scores >= thr, scores > thr) & geometry.splittable(depth, index)
        batch, depth, index, scores = batch[keep], depth[keep], index[keep], scores[keep]
        if not batch.numel():
            break
        parts.append((batch, depth, index, scores))
        collected_batch, collected = torch.cat([collected_batch, batch]), torch.cat([collected, scores])
        if max_splits:
            order = _order([collected_batch, -collected])
            counts = torch.bincount(collected_batch, minlength=batch_size)
            first = torch.cumsum(counts, 0) - counts
            enough = counts >= max_splits
            at = torch.clamp(first + max_splits - 1, max=collected.numel() - 1)
            kth = collected[order][at]
            update = enough & ((kth > threshold) | ~inclusive)
            threshold = torch.where(update, torch.maximum(kth, threshold), threshold)
            inclusive = inclusive | update
        batch, _, index = geometry.children(batch, depth, index)
    if not parts or max_splits == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return empty, empty, torch.zeros((0, geometry.ndim), dtype=torch.int64, device=device)
    batch, depth, index, scores = (torch.cat(v) for v in zip(*parts))
    volumes = geometry.volume(depth, index)
    order = _order([batch, -scores, -volumes, geometry.codes(depth, index)])
    order = order[_ranks(batch[order], batch_size) < max_splits]
    return batch[order], depth[order], index[order]


def _fill_splits(
    geometry: _Geometry, split: tuple[torch.Tensor, ...], budget: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, ...]:
    """The numpy build's ``_fill_splits`` for every sample at once (``budget``: ``(B,)`` splits left)."""
    pool = geometry.frontier(split, batch_size)
    chosen = []
    while True:
        batch, depth, index = pool
        keep = (budget[batch] > 0) & geometry.splittable(depth, index)
        batch, depth, index = batch[keep], depth[keep], index[keep]
        if not batch.numel():
            break
        volumes = geometry.volume(depth, index)
        largest = torch.full((batch_size,), -1, dtype=volumes.dtype, device=volumes.device)
        largest = largest.scatter_reduce(0, batch, volumes, reduce="amax")
        top = torch.nonzero(volumes == largest[batch]).flatten()
        top = top[_order([batch[top], geometry.codes(depth[top], index[top])])]
        top = top[_ranks(batch[top], batch_size) < budget[batch[top]]]
        now = (batch[top], depth[top], index[top])
        chosen.append(now)
        budget = budget - torch.bincount(now[0], minlength=batch_size)
        rest = torch.ones(batch.numel(), dtype=torch.bool, device=batch.device)
        rest[top] = False
        kids = geometry.children(*now)
        pool = tuple(torch.cat([v[rest], k]) for v, k in zip((batch, depth, index), kids))
    if not chosen:
        return tuple(v[:0] for v in split)
    return tuple(torch.cat([c[i] for c in chosen]) for i in range(3))


def build_forests(
    scores: Any, spec: ForestSpec | Mapping[str, Any] | int | None = None, **options: Any
) -> list[Forest]:
    """The forests of a batch of score maps of one shape, built with torch ops on their device.

    Equal to ``[build_forest(s, spec) for s in scores]`` (the numpy build), sample by sample.

    Args:
        scores: ``(B, H, W)`` or ``(B, H, W, D)`` non-negative torch tensor on any device: uint8 soft
            edges (:func:`~monai_shf.forest.torch_edges.soft_edge_maps`), bool Canny edges, any integer
            or float scores (floats are summed in float64). Not modified.
        spec: the :class:`~monai_shf.forest.ForestSpec` (or a mapping of its options, or ``L`` alone), as
            for :func:`~monai_shf.forest.build_forest`.
        options: forest options set on top of ``spec``.

    Returns:
        ``B`` :class:`~monai_shf.forest.Forest` objects (leaf boxes copied to the host, ``(N, D)`` int64).
        Device memory: the pyramid (at most about 2 bytes per pixel at ``min_size=2`` for uint8 scores)
        plus ``O(B * L * depth)`` node arrays.
    """
    spec = ForestSpec.create(spec, **options)
    x = _as_scores(scores)
    batch_size, shape = int(x.shape[0]), tuple(int(s) for s in x.shape[1:])
    length, min_size = spec.length, spec.min_size
    if min_size > max(shape):
        raise ValueError(f"min_size ({min_size}) is larger than every side of the image {shape}.")
    _check_length(length, shape)
    ndim = len(shape)
    roots = _root_counts(shape, length, min_size)
    axes = [_axis_bounds(shape[a], roots[a], min_size) for a in range(ndim)]
    geometry = _Geometry(axes, roots, x.device)
    pyramid = _count_pyramid(x, [b for b, _ in axes], max(geometry.max_depth - 1, 0))
    max_splits = (length - math.prod(roots)) // (2**ndim - 1)
    split = _priority_splits(geometry, pyramid, spec, max_splits, batch_size)
    if spec.fill == "uniform":
        budget = max_splits - torch.bincount(split[0], minlength=batch_size)
        if bool((budget > 0).any()):
            extra = _fill_splits(geometry, split, budget, batch_size)
            split = tuple(torch.cat([s, e]) for s, e in zip(split, extra))
    batch, depth, index = geometry.frontier(split, batch_size)
    order = _order([batch, geometry.codes(depth, index)])
    batch, depth, index = batch[order], depth[order], index[order]
    starts = torch.stack([geometry.lookup(geometry.bounds[a], depth, index[:, a]) for a in range(ndim)], 1)
    ends = torch.stack([geometry.lookup(geometry.bounds[a], depth, index[:, a] + 1) for a in range(ndim)], 1)
    counts = torch.bincount(batch, minlength=batch_size).cpu().tolist()
    starts_np, sizes_np = starts.cpu().numpy(), (ends - starts).cpu().numpy()
    out, at = [], 0
    for n in counts:
        out.append(Forest._from_build(starts_np[at : at + n].copy(), sizes_np[at : at + n].copy(), shape, length))
        at += n
    return out


def build_forest_torch(score: Any, spec: ForestSpec | Mapping[str, Any] | int | None = None, **options: Any) -> Forest:
    """:func:`build_forests` of one ``(H, W)`` / ``(H, W, D)`` score tensor (what ``build_forest`` runs for
    a device tensor)."""
    if not isinstance(score, torch.Tensor):
        raise TypeError(f"score must be a torch tensor, got {type(score).__name__}.")
    if score.ndim not in (2, 3):
        raise ValueError(f"score must have 2 or 3 dimensions, got shape {tuple(score.shape)}.")
    return build_forests(score[None], spec, **options)[0]
