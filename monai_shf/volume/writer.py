"""Chunk-by-chunk multiscale OME-Zarr (NGFF 0.4) writing: :func:`write_multiscale` (the one writer of
the package) and :func:`write_volume_mask` (depatching SHF predictions straight into a label image).

Store layout: a zarr v2 group with ``multiscales`` metadata (axes ``z, y, x`` of type ``"space"``, or
``c, z, y, x``), datasets ``"0"``, ``"1"``, ... (2x floor halving down to the first level whose longest
side fits one chunk), each with a ``scale`` transformation of its voxel size; label images add
``image-label`` metadata (``ome_zarr.reader`` and napari then read them as labels). Level 0 is rendered by a
``render(start, size)`` callback, chunk by chunk; level ``k`` is computed from level ``k - 1`` chunk by
chunk (``"nearest"``: every second voxel, so no class is blended or invented; ``"mean"``: 2x block means).

Atomicity: the store is written under a temporary name in the output folder and renamed into place at
the end; a failure at any point leaves no partial store (and an existing store at ``out`` untouched).
"""

from __future__ import annotations

import itertools
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from monai_shf.forest import Forest, nearest_index, resample_matrix
from monai_shf.validation import check_array, check_choice, check_finite, check_int, check_not_input, to_numpy

from .reader import _zarr, open_volume

__all__ = ["write_multiscale", "write_volume_mask", "multiscale_shapes"]

Render = Callable[[tuple[int, int, int], tuple[int, int, int]], np.ndarray]


def multiscale_shapes(shape: Sequence[int], chunk: int, levels: int | None = None) -> list[tuple[int, int, int]]:
    """Level shapes of a 2x (floor) pyramid, down to the first level whose longest side is ``<= chunk``."""
    shapes = [tuple(int(s) for s in shape)]
    while (levels is None and max(shapes[-1]) > chunk) or (levels is not None and len(shapes) < levels):
        nxt = tuple(s // 2 for s in shapes[-1])
        if min(nxt) < 1:
            break
        shapes.append(nxt)
    return shapes


def _blocks(shape: Sequence[int], chunk: Sequence[int]) -> itertools.product:
    return itertools.product(*(range(0, s, c) for s, c in zip(shape, chunk)))


def _rendered(render: Callable, step: int, lead: tuple[int, ...], dtype: np.dtype, stepped: bool) -> Callable:
    def make(start: tuple[int, ...], size: tuple[int, ...]) -> np.ndarray:
        block = render(start, size, step) if stepped else render(start, size)
        block = np.asarray(block).astype(dtype, copy=False)
        if block.shape != lead + size:
            raise ValueError(f"render returned shape {block.shape} for a block of {lead + size}.")
        return block

    return make


def _downsampled(src: Any, downsample: str, dtype: np.dtype) -> Callable:
    """Blocks of the next level from level array ``src``: every second voxel or 2x block means."""

    def make(start: tuple[int, ...], size: tuple[int, ...]) -> np.ndarray:
        region = src[(Ellipsis,) + tuple(slice(2 * a, 2 * (a + b)) for a, b in zip(start, size))]
        if downsample == "nearest":
            return region[(Ellipsis,) + (slice(None, None, 2),) * 3]
        c = region.shape[:-3]
        block = region.reshape(c + (size[0], 2, size[1], 2, size[2], 2)).mean(axis=(-5, -3, -1))
        return (np.rint(block) if dtype.kind in "biu" else block).astype(dtype)

    return make


def _write_level(arr: Any, shape: Sequence[int], chunk: int, make: Callable, workers: int) -> None:
    """Write every chunk of ``arr`` (``shape`` spatial) from ``make(start, size)``, ``workers`` at a time
    (whole chunks per thread: no two threads touch one chunk); the first error is raised."""

    def one(start: tuple[int, ...]) -> None:
        size = tuple(min(chunk, s - a) for a, s in zip(start, shape))
        arr[(Ellipsis,) + tuple(slice(a, a + b) for a, b in zip(start, size))] = make(start, size)

    blocks = _blocks(shape, (chunk,) * 3)
    if workers == 1:
        for start in blocks:
            one(start)
        return
    with ThreadPoolExecutor(workers) as pool:
        while True:
            window = list(itertools.islice(blocks, 4 * workers))  # bounded: a few chunks in flight
            if not window:
                return
            for future in [pool.submit(one, start) for start in window]:
                future.result()


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished store ``tmp`` to ``out`` (an existing ``out`` is replaced only now)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_multiscale(
    out: str | os.PathLike,
    shape: Sequence[int],
    render: Render,
    dtype: Any,
    channels: int | None = None,
    chunk: int = 64,
    levels: int | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    downsample: str = "mean",
    label: dict[str, Any] | None = None,
    name: str | None = None,
    unit: str = "micrometer",
    step_render: bool = False,
    workers: int = 2,
) -> Path:
    """Write a multiscale OME-Zarr image, level 0 chunk by chunk from ``render``.

    Args:
        out: the store path (a folder; its parent must exist). Written atomically.
        shape: level-0 ``(D, H, W)``.
        render: ``render((z, y, x), (d, h, w)) -> (d, h, w)`` (or ``(C, d, h, w)`` with ``channels``) array.
        dtype: voxel dtype.
        channels: ``None`` for ``z, y, x`` axes, else the number of channels of a ``c, z, y, x`` image.
        chunk: cubic chunk side.
        levels: number of levels (``None``: down to one chunk).
        spacing: level-0 voxel size (micrometres), finite and ``> 0``.
        downsample: ``"mean"`` (images) or ``"nearest"`` (labels).
        label: ``image-label`` metadata (e.g. ``{"colors": [...]}``) to mark the image a label image.
        name: the multiscale's name.
        unit: NGFF space unit of ``spacing`` (``"micrometer"``, ``"millimeter"``, ...).
        step_render: with ``downsample="nearest"``: every level is rendered, not read back:
            ``render(start, size, step)`` returns the level-0 voxels at ``(start + i) * step`` (``step = 2**k``
            on level ``k``), which is what every-second-voxel downsampling of the level above gives.
        workers: threads rendering, compressing and writing chunks (each thread writes whole chunks).

    Returns:
        ``out`` as a :class:`pathlib.Path`.

    Memory: per worker, one chunk of the level being written plus the ``2**3`` chunks of the level above it.
    """
    zarr = _zarr()
    out = Path(out)
    if not out.parent.is_dir():
        raise ValueError(f"out: the folder of {out} does not exist.")
    shape = tuple(check_int(s, "shape", 1) for s in shape)
    chunk = check_int(chunk, "chunk", 1)
    downsample = check_choice(downsample, "downsample", ("mean", "nearest"))
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be three finite voxel sizes > 0, got {spacing}.")
    dtype = np.dtype(dtype)
    shapes = multiscale_shapes(shape, chunk, levels)
    lead = () if channels is None else (check_int(channels, "channels", 1),)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    stepped = bool(step_render) and downsample == "nearest"
    workers = check_int(workers, "workers", 1)
    try:
        group = zarr.open_group(str(tmp), mode="w")
        arrays = [
            group.create_dataset(
                str(k), shape=lead + s, chunks=lead + (chunk,) * 3, dtype=dtype, write_empty_chunks=False
            )
            for k, s in enumerate(shapes)
        ]
        for k, level_shape in enumerate(shapes):
            if k == 0 or stepped:
                make = _rendered(render, 2**k, lead, dtype, stepped)
            else:
                make = _downsampled(arrays[k - 1], downsample, dtype)
            _write_level(arrays[k], level_shape, chunk, make, workers)
        axes = ([{"name": "c", "type": "channel"}] if lead else []) + [
            {"name": n, "type": "space", "unit": unit} for n in "zyx"
        ]
        datasets = [
            {
                "path": str(k),
                "coordinateTransformations": [
                    {"type": "scale", "scale": ([1.0] if lead else []) + [sp * 2**k for sp in spacing]}
                ],
            }
            for k in range(len(shapes))
        ]
        from ome_zarr.writer import write_multiscales_metadata

        write_multiscales_metadata(group, datasets, axes=axes, name=name or out.name.split(".")[0])
        if label is not None:
            group.attrs["image-label"] = {"version": "0.4", **label}
        _replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _argmax0(values: np.ndarray) -> np.ndarray:
    best = values[0].copy()
    out = np.zeros(values.shape[1:], np.uint8)
    for c in range(1, values.shape[0]):
        better = values[c] > best
        out[better] = c
        np.maximum(best, values[c], out=best)
    return out


_RESAMPLE_VOXELS = 1 << 19  # voxels resampled at once: K * 4 bytes each, twice (about 12 MB at K = 3)


def _resampled_labels(token: np.ndarray, rows: list[np.ndarray], dst: np.ndarray, where: np.ndarray | None) -> None:
    """``dst = argmax`` of the ``(K, p, p, p)`` token resampled by per-axis ``rows`` ``(n_a, p)`` (only at
    ``where`` when given), in slabs along z: x and y as small products, z as ``p`` broadcast
    multiply-adds (a BLAS product with an inner size of ``p`` is many times slower here)."""
    rz, ry, rx = rows
    nodes = np.flatnonzero(rz.any(axis=0))  # the z nodes these rows weight (two within one node pair)
    rz, token = rz[:, nodes], token[:, nodes]
    k, p = token.shape[0], token.shape[1]
    ny, nx = ry.shape[0], rx.shape[0]
    xy = np.einsum("kabc,xc->kabx", token, rx)
    xy = np.einsum("kabx,yb->kayx", xy, ry).reshape(k, p, 1, ny * nx)  # every used z node at the block's y, x
    step = max(1, _RESAMPLE_VOXELS // max(1, ny * nx))
    for z0 in range(0, rz.shape[0], step):
        w = rz[z0 : min(rz.shape[0], z0 + step)]
        nz = w.shape[0]
        acc = np.empty((k, nz, ny * nx), token.dtype)
        tmp = np.empty_like(acc)
        used = np.flatnonzero(w.any(axis=0))  # z nodes with a weight (two within one node pair)
        np.multiply(w[None, :, used[0], None], xy[:, used[0]], out=acc)
        for j in used[1:].tolist():
            np.multiply(w[None, :, j, None], xy[:, j], out=tmp)
            acc += tmp
        labels = _argmax0(acc.reshape(k, nz, ny, nx))
        if where is None:
            dst[z0 : z0 + nz] = labels
        else:
            np.copyto(dst[z0 : z0 + nz], labels, where=where[z0 : z0 + nz])


def _runs(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run-length form of a non-decreasing index array: ``(values, counts)``."""
    cut = np.flatnonzero(np.diff(index)) + 1
    starts = np.concatenate(([0], cut))
    return index[starts], np.diff(np.concatenate((starts, [len(index)])))


def _expand(table: np.ndarray, runs: list[tuple[np.ndarray, np.ndarray]], out: np.ndarray) -> None:
    """``out = table[np.ix_(*indices)]`` for run-length ``indices``: a fill when the picked cells agree,
    else the distinct cells picked once and repeated along each axis."""
    small = table[np.ix_(*(v for v, _ in runs))]
    if small.min() == small.max():
        out[...] = small.flat[0]
        return
    for axis, (_, counts) in enumerate(runs):
        small = np.repeat(small, counts, axis=axis)
    out[...] = small


class _MaskRenderer:
    """Renders blocks of the depatched mask (level 0, or every ``step``-th voxel of it) from the leaves
    that intersect them, equal to ``deserialize(..., "linear", argmax=True)`` of scores or
    ``deserialize(..., "nearest")`` of integer labels.

    Scores: linear resampling weights a leaf voxel's score by at most two token nodes per axis (convex
    weights), so where the argmax of those ``2**3`` nodes is one class, the voxel's argmax is that class
    (a convex combination keeps every pairwise order of the classes, ties included). Per leaf, the table
    ``cells[i]`` ``(2p - 1)**3`` holds that class, or 255 when the nodes disagree, for every node pair
    ``g`` per axis (``g = first + last`` node); a block is filled from the table (one fill when it agrees)
    and only the voxels of mixed cells are resampled (separable matrix products, in z-slabs of at most
    :data:`_RESAMPLE_VOXELS` voxels, so temporaries do not grow with the leaf) and argmaxed.
    Leaves smaller than ``p`` along an axis (area means of more than two nodes) are always resampled.
    """

    def __init__(self, forest: Forest, values: np.ndarray, kind: str):
        self.forest, self.values, self.kind = forest, values, kind
        n = forest.num_leaves
        self.patch = p = values.shape[-1]
        self.starts, self.ends = forest.starts, forest.ends
        self.cache: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        if kind == "labels":
            return
        nodes = _argmax0(values.reshape(values.shape[0], n, -1)).reshape(n, p, p, p)
        lo, hi = nodes, nodes
        for axis in (1, 2, 3):  # node pairs (g // 2, (g + 1) // 2) along each axis in turn
            first = np.arange(2 * p - 1) // 2
            last = (np.arange(2 * p - 1) + 1) // 2
            lo = np.minimum(np.take(lo, first, axis=axis), np.take(lo, last, axis=axis))
            hi = np.maximum(np.take(hi, first, axis=axis), np.take(hi, last, axis=axis))
        self.cells = np.where(lo == hi, lo, 255).astype(np.uint8)

    def _axis(self, size: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Per leaf side: the resampling rows (``(size, p)`` weights, or nearest indices for labels) and the
        node pair ``g`` of every row (``None`` when a row spans more than two nodes)."""
        got = self.cache.get(size)
        if got is None:
            if self.kind == "labels":
                got = (nearest_index(size, self.patch), None)
            else:
                rows = resample_matrix(self.patch, size, "linear").numpy()
                nz = rows > 0
                first = nz.argmax(1)
                last = self.patch - 1 - nz[:, ::-1].argmax(1)
                pairs = first + last if (last - first).max() <= 1 else None
                got = (rows.astype(self.values.dtype), pairs)
            self.cache[size] = got
        return got

    def __call__(self, start: tuple[int, int, int], size: tuple[int, int, int], step: int = 1) -> np.ndarray:
        a, n = np.asarray(start), np.asarray(size)
        # block positions j hold level-0 voxels (a + j) * step; leaf i covers j in [ceil(s/step) - a, ceil(e/step) - a)
        first = np.clip(-(-self.starts // step) - a, 0, n)
        stop = np.clip(-(-self.ends // step) - a, 0, n)
        hit = np.flatnonzero((stop > first).all(axis=1))
        out = np.empty(size, np.uint8)
        for i in hit.tolist():
            j0, j1 = first[i], stop[i]
            dst = out[tuple(slice(int(u), int(w)) for u, w in zip(j0, j1))]
            # leaf-local level-0 coordinates of the block positions, per axis
            local = [(a[ax] + np.arange(j0[ax], j1[ax])) * step - self.starts[i, ax] for ax in range(3)]
            axes = [self._axis(int(self.forest.sizes[i, ax])) for ax in range(3)]
            if self.kind == "labels":
                _expand(self.values[i], [_runs(rows[loc]) for (rows, _), loc in zip(axes, local)], dst)
                continue
            if all(pairs is not None for _, pairs in axes):
                _expand(self.cells[i], [_runs(pairs[loc]) for (_, pairs), loc in zip(axes, local)], dst)
                mixed = dst == 255
                if not mixed.any():
                    continue
                # per run of one z node pair: resample the (y, x) bounding box of its mixed voxels only
                z = 0
                for count in _runs(axes[0][1][local[0]])[1].tolist():
                    zs = slice(z, z + count)
                    z += count
                    m = mixed[zs]
                    if not m.any():
                        continue
                    ys, xs = (np.flatnonzero(m.any(axis=other)) for other in ((0, 2), (0, 1)))
                    box = (zs, slice(int(ys[0]), int(ys[-1]) + 1), slice(int(xs[0]), int(xs[-1]) + 1))
                    rows = [r[loc[sl]] for (r, _), loc, sl in zip(axes, local, box)]
                    _resampled_labels(self.values[:, i], rows, dst[box], mixed[box])
                continue
            rows = [r[loc] for (r, _), loc in zip(axes, local)]
            _resampled_labels(self.values[:, i], rows, dst, None)
        return out


def write_volume_mask(
    out: str | os.PathLike,
    forest: Forest,
    pred: Any,
    like: Any = None,
    chunk: int = 64,
    spacing: Sequence[float] | None = None,
    levels: int | None = None,
    name: str | None = None,
    unit: str = "micrometer",
    workers: int = 2,
) -> Path:
    """Depatch SHF predictions chunk by chunk into a multiscale NGFF label image (never a full-size array).

    Args:
        out: output store (a folder, e.g. ``mask.zarr``; its parent must exist). Written atomically.
        forest: the volume's forest in level-0 voxels (3D).
        pred: ``(K >= 2, L, p, p, p)`` float scores written as their argmax, or ``(1, L, p, p, p)`` integer
            labels in ``[0, 255]``; numpy or torch. Padding tokens are ignored.
        like: the source volume (a :class:`~monai_shf.volume.Volume` or store path): its level-0 shape must
            equal the forest's; its spacing is copied.
        chunk: cubic chunk side of the mask.
        spacing: level-0 voxel size; overrides ``like``'s.
        levels: pyramid levels (``None``: down to one chunk), by nearest downsampling (every level is
            rendered from the tokens at its own voxels, never read back).
        name: the label image's name.
        unit: space unit of ``spacing`` (``like``'s when it names one).
        workers: threads rendering and writing chunks.

    Level 0 equals ``deserialize(pred, forest, mode="linear", argmax=True)`` for scores (up to float
    rounding on exact near-ties) and ``deserialize(pred, forest, mode="nearest")`` for labels.

    Returns:
        ``out`` as a :class:`pathlib.Path`: a uint8 ``z, y, x`` label image.
    """
    if not isinstance(forest, Forest):
        raise TypeError(f"forest must be a monai_shf.forest.Forest, got {type(forest).__name__}.")
    if forest.spatial_dims != 3:
        raise ValueError(f"write_volume_mask needs a 3D forest, got spatial_shape {forest.spatial_shape}.")
    check_array(pred, "pred", ndims=(5,), finite=False)
    values = to_numpy(pred)
    k, length, p = values.shape[0], values.shape[1], values.shape[2]
    if length != forest.length or values.shape[3:] != (p, p):
        raise ValueError(
            f"pred must be (K, L={forest.length}, p, p, p) for this forest, got shape {tuple(values.shape)}."
        )
    if like is not None:
        volume = open_volume(like)
        if tuple(volume.shape) != forest.spatial_shape:
            raise ValueError(
                f"like ({volume.path}) has level-0 shape {volume.shape} but the forest covers "
                f"{forest.spatial_shape}: the mask must have the image's shape."
            )
        check_not_input(out, [volume.path], "out")
        spacing = volume.spacing if spacing is None else spacing
        unit = volume.unit or unit
    n = forest.num_leaves
    values = values[:, :n]
    if values.dtype.kind in "biu":
        if k != 1:
            raise ValueError(f"integer pred must be (1, L, p, p, p) class labels, got {k} channels.")
        if values.size and (int(values.min()) < 0 or int(values.max()) > 255):
            raise ValueError(f"label pred must lie in [0, 255] (uint8 mask), got {values.min()}..{values.max()}.")
        kind, values = "labels", values[0].astype(np.uint8)
        num_labels = int(values.max()) + 1 if values.size else 1
    else:
        if k < 2 or k > 256:
            raise ValueError(f"float pred must be (K, L, p, p, p) class scores with 2 <= K <= 256, got K={k}.")
        kind = "scores"
        values = values.astype(np.float64 if values.dtype == np.float64 else np.float32, copy=False)
        check_finite(values, "pred")
        num_labels = k
    renderer = _MaskRenderer(forest, values, kind)
    label = {"properties": [{"label-value": v} for v in range(num_labels)]}
    return write_multiscale(
        out,
        forest.spatial_shape,
        renderer,
        np.uint8,
        chunk=chunk,
        levels=levels,
        spacing=(1.0, 1.0, 1.0) if spacing is None else spacing,
        downsample="nearest",
        label=label,
        name=name,
        unit=unit,
        step_render=True,
        workers=workers,
    )
