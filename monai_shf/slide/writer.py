"""Tile-streaming pyramidal TIFF writing: :func:`write_pyramid` (the one writer of the project) and
:func:`write_slide_mask` (depatching SHF predictions straight into a pyramidal mask).

File layout (what OpenSlide, tifffile and MONAI's ``WSIReader`` all read as a pyramid): BigTIFF,
level 0 plus 2x reduced levels (``ceil`` halving) down to the first level that fits in one tile,
written as a flat IFD chain where every reduced level has ``NewSubfileType = 1`` (reduced
resolution); square tiles (512 by default); resolution tags in pixels per centimetre from the
microns per pixel (``mpp``) of level 0, scaled by ``2**k`` at level ``k``.

Streaming: tifffile pulls one encoded tile at a time from a generator (``TiffWriter.write(data=
iterator of bytes, shape=..., tile=...)``); tiles are rendered by a ``render(level, y0, x0, h, w)``
callback and encoded by a thread pool, one *band* (a row of tiles of one level) per task, a bounded
number of bands ahead. No level is ever held whole: peak memory is a few bands of encoded tiles plus
one raw tile per thread. Constant tiles (background, large uniform leaves) are encoded once per value
and their bytes reused.

The file is written to a temporary name in the output folder and renamed at the end
(:func:`monai_shf.utils.atomic_write`): a failure at any point (a render that raises, a full disk)
leaves neither a partial file nor a temporary behind.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from monai_shf.enums import Compression, Photometric, values
from monai_shf.forest import Forest, nearest_index, resample_matrix
from monai_shf.utils import atomic_write
from monai_shf.validation import (
    check_array,
    check_choice,
    check_finite,
    check_int,
    check_not_input,
    check_output_path,
    to_numpy,
)

from .classes import class_record
from .reader import open_slide

__all__ = ["write_pyramid", "write_slide_mask", "pyramid_shapes", "level_sample_index", "COMPRESSIONS"]

COMPRESSIONS = values(Compression)

Render = Callable[[int, int, int, int, int], Any]


def pyramid_shapes(shape: Sequence[int], tile: int, levels: int | None = None) -> list[tuple[int, int]]:
    """Level shapes ``[(H0, W0), (H1, W1), ...]`` of a 2x pyramid: each level is ``ceil`` half the
    previous one; by default down to the first level whose longer side is at most ``tile``.

    Args:
        shape: ``(H, W)`` of level 0.
        tile: tile side in pixels.
        levels: number of levels (``>= 1``); ``None`` for the default. A number larger than the
            default still stops at a ``1 x 1`` level.
    """
    h, w = (int(s) for s in shape)
    shapes = [(h, w)]
    while (levels is None and max(h, w) > tile) or (levels is not None and len(shapes) < levels and max(h, w) > 1):
        h, w = (h + 1) // 2, (w + 1) // 2
        shapes.append((h, w))
    return shapes


def level_sample_index(start: int, stop: int, level: int, size0: int) -> np.ndarray:
    """Level-0 pixel index sampled by pixels ``start..stop-1`` (one axis) of pyramid level ``level``.

    Level ``k`` (factor ``f = 2**k``) pixel ``i`` covers level-0 pixels ``[i f, (i + 1) f)``; it takes
    the value of the level-0 pixel just past its centre, ``i f + f // 2`` (clamped to the last pixel
    ``size0 - 1`` at the border of a ``ceil``-halved level). Every reduced level of a written mask is
    therefore an exact decimation of level 0: labels are never blended across a class boundary.
    """
    f = 1 << level
    return np.minimum(np.arange(start, stop, dtype=np.int64) * f + f // 2, size0 - 1)


def _level_count_below(values: np.ndarray, level: int, size0: int, size_k: int) -> np.ndarray:
    """For level-0 coordinates ``values``: how many level-``k`` pixels sample a level-0 index below
    each value (so a leaf ``[s, e)`` owns level-``k`` pixels ``[count(s), count(e))``)."""
    f = 1 << level
    counts = np.clip((values - f // 2 + f - 1) // f, 0, size_k)
    return np.where(values >= size0, size_k, counts)


def _normalise_mpp(mpp: Any) -> tuple[float, float] | None:
    if mpp is None:
        return None
    values = (mpp, mpp) if np.isscalar(mpp) else tuple(mpp)
    try:
        values = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise TypeError(f"mpp must be a positive number or a (y, x) pair of them, got {mpp!r}.") from None
    if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"mpp must be a positive number or a (y, x) pair of them, got {mpp!r}.")
    return values


class _Encoder:
    """Encodes one ``(tile, tile, C)`` tile to the bytes of one TIFF tile, padding edge tiles, with a
    cache for constant tiles (one encoding per value)."""

    def __init__(self, tile: int, channels: int, dtype: np.dtype, compression: str, quality: int):
        import imagecodecs

        self.tile, self.channels, self.dtype = tile, channels, dtype
        self.cache: dict[bytes, bytes] = {}
        self.lock = threading.Lock()
        if compression == "deflate":
            # horizontal predictor (per sample along x) then a zlib stream (TIFF compression 8,
            # predictor 2) made by libdeflate: measured 2.5x less CPU than zlib at the same level
            # and ratio on mask tiles
            def encode(a: np.ndarray) -> bytes:
                return imagecodecs.deflate_encode(imagecodecs.delta_encode(a, axis=1), level=6)

        elif compression == "jpeg":
            if channels == 3:

                def encode(a: np.ndarray) -> bytes:  # as tifffile writes JPEG RGB: YCbCr, 2x2 subsampling
                    return imagecodecs.jpeg8_encode(
                        a, level=quality, colorspace="RGB", outcolorspace="YCBCR", subsampling=(2, 2)
                    )

            else:

                def encode(a: np.ndarray) -> bytes:
                    return imagecodecs.jpeg8_encode(np.ascontiguousarray(a[..., 0]), level=quality)

        else:

            def encode(a: np.ndarray) -> bytes:
                return a.tobytes()

        self._encode = encode

    def __call__(self, data: Any, h: int, w: int) -> bytes:
        """``data``: the render result for an ``h x w`` tile: an array ``(h, w)`` / ``(h, w, C)``, or a
        scalar / ``C`` values meaning a constant tile."""
        arr = np.asarray(data)
        if arr.ndim <= 1:  # constant tile
            value = np.broadcast_to(arr.astype(self.dtype, copy=False), (self.channels,))
            return self._constant(value)
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.shape != (h, w, self.channels):
            raise ValueError(
                f"render returned a tile of shape {arr.shape}, expected ({h}, {w}, {self.channels}) "
                f"(or ({h}, {w}) for one channel, or a constant)."
            )
        if arr.dtype != self.dtype:
            raise TypeError(f"render returned dtype {arr.dtype}, expected {self.dtype}.")
        first = arr[0, 0]
        if (arr == first).all():  # one pass over an already cached tile: cheaper than encoding it
            return self._constant(first)
        if (h, w) != (self.tile, self.tile):
            padded = np.zeros((self.tile, self.tile, self.channels), self.dtype)
            padded[:h, :w] = arr
            arr = padded
        return self._encode(np.ascontiguousarray(arr))

    def _constant(self, value: np.ndarray) -> bytes:
        key = value.tobytes()
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        with self.lock:  # checked again under the lock: two threads meeting a new value encode it once
            cached = self.cache.get(key)
            if cached is None:
                # (edge tiles of a constant value are padded with the same value: same bytes, still valid)
                full = np.empty((self.tile, self.tile, self.channels), self.dtype)
                full[...] = value
                cached = self.cache[key] = self._encode(full)
        return cached


class _BandStream:
    """The encoded tiles of every band of every level, in file order, rendered ahead by a pool.

    ``next_band()`` returns the list of encoded tiles of the next band; at most ``ahead`` bands are
    in flight (bounded memory)."""

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        shapes: list[tuple[int, int]],
        tile: int,
        render: Render,
        encoder: _Encoder,
        ahead: int,
    ):
        self.pool, self.tile, self.render, self.encoder, self.ahead = pool, tile, render, encoder, ahead
        self.bands = iter([(k, y0) for k, (h, _) in enumerate(shapes) for y0 in range(0, h, tile)])
        self.shapes = shapes
        self.pending: deque[Future] = deque()

    def _band(self, level: int, y0: int) -> list[bytes]:
        height, width = self.shapes[level]
        h = min(self.tile, height - y0)
        out = []
        for x0 in range(0, width, self.tile):
            w = min(self.tile, width - x0)
            out.append(self.encoder(self.render(level, y0, x0, h, w), h, w))
        return out

    def _fill(self) -> None:
        while len(self.pending) < self.ahead:
            band = next(self.bands, None)
            if band is None:
                return
            self.pending.append(self.pool.submit(self._band, *band))

    def next_band(self) -> list[bytes]:
        self._fill()
        tiles = self.pending.popleft().result()
        self._fill()
        return tiles

    def level_tiles(self, level: int) -> Iterator[bytes]:
        """The encoded tiles of one level in row-major order. tifffile stops pulling after the last
        tile, so nothing may follow the final ``yield`` (the stream itself owns no cleanup)."""
        for _ in range(0, self.shapes[level][0], self.tile):
            yield from self.next_band()

    def cancel(self) -> None:
        for future in self.pending:
            future.cancel()


def _check_pyramid_format(compression: str, photometric: str | None, dtype: Any, num_channels: int) -> tuple:
    """``(compression, photometric, dtype)`` checked against each other (``photometric`` defaulted)."""
    channels = check_int(num_channels, "num_channels", 1)
    compression = check_choice(compression, "compression", COMPRESSIONS)
    dtype = np.dtype(dtype)
    if compression == "jpeg" and (dtype != np.uint8 or channels not in (1, 3)):
        raise ValueError(f"compression='jpeg' needs uint8 images with 1 or 3 channels, got {dtype} x {channels}.")
    if photometric is None:
        photometric = "rgb" if channels == 3 else "minisblack"
    photometric = check_choice(photometric, "photometric", Photometric)
    if photometric == "rgb" and channels < 3:
        raise ValueError(f"photometric='rgb' needs at least 3 channels, got {channels}.")
    return compression, photometric, dtype


def _level_tags(
    level: int, mpp_yx: tuple[float, float] | None, compression: str, description: str | None, channels: int
) -> dict[str, Any]:
    """The ``TiffWriter.write`` options of one pyramid level besides its tiles."""
    kwargs: dict[str, Any] = {}
    if mpp_yx is not None:  # pixels per centimetre; level k pixels are 2**k level-0 pixels
        f = 1 << level
        kwargs["resolution"] = (1e4 / (mpp_yx[1] * f), 1e4 / (mpp_yx[0] * f))
        kwargs["resolutionunit"] = "CENTIMETER"
    if compression == "deflate":
        kwargs["predictor"] = True
    if description is not None:
        kwargs["description"] = description
    if channels > 1:
        kwargs["planarconfig"] = "contig"
    return kwargs


def write_pyramid(
    path: str | Path,
    shape: Sequence[int],
    num_channels: int,
    dtype: Any,
    render: Render,
    tile: int = 512,
    levels: int | None = None,
    compression: str = "deflate",
    quality: int = 90,
    photometric: str | None = None,
    mpp: float | Sequence[float] | None = None,
    description: str | None = None,
    workers: int = 2,
) -> Path:
    """Write a tiled pyramidal BigTIFF tile by tile, never holding a level in memory.

    Args:
        path: output file; its folder must exist. Written atomically (temporary name, then rename).
        shape: ``(H, W)`` of level 0.
        num_channels: samples per pixel ``C`` (1 for masks/labels, 3 for RGB).
        dtype: sample dtype (e.g. ``np.uint8``).
        render: ``render(level, y0, x0, h, w)`` returns the tile of ``level`` whose top-left pixel is
            ``(y0, x0)`` in that level's pixels: an ``(h, w)`` or ``(h, w, C)`` array of ``dtype``, or a
            scalar / ``C`` values for a constant tile (encoded once and reused). Called from
            ``workers`` threads at once, each on its own band (row of tiles); must be thread-safe.
            Levels are :func:`pyramid_shapes` (2x ``ceil`` halving).
        tile: tile side (a multiple of 16).
        levels: number of levels; ``None``: down to the first level that fits in one tile.
        compression: ``"deflate"`` (zlib + horizontal predictor; lossless: masks, labels),
            ``"jpeg"`` (uint8 1- or 3-channel images, YCbCr 4:2:0 for RGB, like most SVS files) or
            ``"none"``.
        quality: JPEG quality (1..100).
        photometric: ``"rgb"`` or ``"minisblack"``; default ``"rgb"`` for 3 channels, else
            ``"minisblack"`` (extra channels stored as extra samples).
        mpp: microns per pixel of level 0, a number or ``(y, x)``; written as X/YResolution in pixels
            per centimetre (level ``k``: ``mpp * 2**k``). ``None``: no resolution tags.
        description: ImageDescription of level 0.
        workers: threads rendering and encoding bands (numpy, OpenCV, zlib and libjpeg release the
            GIL, so two threads use two cores).

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Memory: about ``(workers + 2)`` bands of encoded tiles (a band is ``W / tile`` tiles) plus one
    raw tile per worker and whatever ``render`` allocates: independent of the image area.
    """
    import tifffile

    path = check_output_path(path, "path")
    compression, photometric, dtype = _check_pyramid_format(compression, photometric, dtype, num_channels)
    if not callable(render):
        raise TypeError(f"render must be a callable render(level, y0, x0, h, w), got {type(render).__name__}.")
    if len(tuple(shape)) != 2:
        raise ValueError(f"shape must be (H, W), got {tuple(shape)!r}.")
    height, width = (check_int(s, "shape", 1) for s in shape)
    channels = check_int(num_channels, "num_channels", 1)
    tile = check_int(tile, "tile", 16)
    if tile % 16:
        raise ValueError(f"tile must be a multiple of 16 (a TIFF requirement), got {tile}.")
    if levels is not None:
        levels = check_int(levels, "levels", 1)
    quality = check_int(quality, "quality", 1)
    workers = check_int(workers, "workers", 1)
    mpp_yx = _normalise_mpp(mpp)

    shapes = pyramid_shapes((height, width), tile, levels)
    encoder = _Encoder(tile, channels, dtype, compression, min(quality, 100))
    tiff_compression = {"deflate": "zlib", "jpeg": "jpeg", "none": None}[compression]

    def write(tmp: str) -> None:
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="write_pyramid")
        stream = _BandStream(pool, shapes, tile, render, encoder, ahead=workers + 1)
        try:
            with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
                for level, level_shape in enumerate(shapes):
                    kwargs = _level_tags(level, mpp_yx, compression, description if level == 0 else None, channels)
                    tif.write(
                        data=stream.level_tiles(level),
                        shape=level_shape + ((channels,) if channels > 1 else ()),
                        dtype=dtype,
                        tile=(tile, tile),
                        compression=tiff_compression,
                        photometric=photometric,
                        subfiletype=1 if level else 0,
                        metadata=None,
                        **kwargs,
                    )
        finally:
            stream.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

    atomic_write(path, write)
    return path


class _MaskRenderer:
    """Renders tiles of every level of a depatched mask straight from the leaves.

    Per level, the leaves are mapped to the level's pixels (a level-``k`` pixel belongs to the leaf
    holding the level-0 pixel it samples, :func:`level_sample_index`) and to the tiles they touch:
    (leaf, tile) pairs sorted by tile, with the leaf's box clipped to the tile precomputed. A tile
    whose leaves all predict one class everywhere is constant and never rendered. Other tiles are
    filled leaf by leaf: constant leaves by a fill, others by resampling their token to the clipped
    box with separable matrices (``rows @ token @ cols.T``). The resampling rows of a leaf depend only
    on its size, its phase on the level's sample grid and whether it touches the image end, so they
    are cached per such key (a handful of distinct sizes in a quadtree). Read-only state apart from
    that cache (dict updates are atomic in CPython; a duplicate computation is harmless): thread-safe.
    """

    def __init__(self, forest: Forest, values: np.ndarray, kind: str, shapes: list[tuple[int, int]], tile: int):
        self.forest, self.values, self.kind, self.tile, self.shapes = forest, values, kind, tile, shapes
        n = forest.num_leaves
        self.patch = values.shape[-1]
        if kind in ("labels", "scores"):
            # per leaf, the class of each token pixel: labels (N, p, p) as they are; scores (K, N, p, p)
            # by argmax: if every token pixel has the same argmax c, every convex combination of them
            # has too (the linear depatching weights are convex), so the whole leaf is class c at any level
            flat = values.reshape(n, -1) if kind == "labels" else _argmax0(values.reshape(values.shape[0], n, -1))
            self.leaf_class = np.where(flat.min(1) == flat.max(1), flat[:, 0].astype(np.int16), -1)
        else:  # probabilities: no shortcut
            self.leaf_class = np.full(n, -1, np.int16)
        self.cache: dict[tuple, np.ndarray] = {}
        self.levels = [self._level(k) for k in range(len(shapes))]

    def _level(self, level: int) -> dict[str, Any]:
        (h0, w0), (hk, wk) = self.shapes[0], self.shapes[level]
        starts, ends = self.forest.starts, self.forest.ends
        ylo = _level_count_below(starts[:, 0], level, h0, hk)
        yhi = _level_count_below(ends[:, 0], level, h0, hk)
        xlo = _level_count_below(starts[:, 1], level, w0, wk)
        xhi = _level_count_below(ends[:, 1], level, w0, wk)
        ids = np.flatnonzero((yhi > ylo) & (xhi > xlo))  # leaves thinner than 2**k may own no pixel
        t = self.tile
        tr0, tr1 = ylo[ids] // t, (yhi[ids] - 1) // t
        tc0, tc1 = xlo[ids] // t, (xhi[ids] - 1) // t
        nc = tc1 - tc0 + 1
        count = (tr1 - tr0 + 1) * nc
        leaf = np.repeat(ids, count)
        j = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
        nc_rep = np.repeat(nc, count)
        tile_row = np.repeat(tr0, count) + j // nc_rep
        tile_col = np.repeat(tc0, count) + j % nc_rep
        ncols = -(-wk // t)
        tile_id = tile_row * ncols + tile_col
        order = np.argsort(tile_id, kind="stable")
        leaf, tile_id, tile_row, tile_col = leaf[order], tile_id[order], tile_row[order], tile_col[order]
        num_tiles = -(-hk // t) * ncols
        bounds = np.searchsorted(tile_id, np.arange(num_tiles + 1))
        cls = self.leaf_class[leaf]
        lo_cls = np.minimum.reduceat(cls, bounds[:-1])  # every tile holds at least one leaf
        hi_cls = np.maximum.reduceat(cls, bounds[:-1])
        tile_class = np.where((lo_cls == hi_cls) & (lo_cls >= 0), lo_cls, -1)
        # per pair: the leaf's level box clipped to the tile, tile-local, and the offset of the clip
        # inside the leaf's own level box
        y0, x0 = tile_row * t, tile_col * t
        a = np.maximum(ylo[leaf], y0)
        b = np.minimum(yhi[leaf], y0 + t)
        c = np.maximum(xlo[leaf], x0)
        d = np.minimum(xhi[leaf], x0 + t)
        pairs = np.stack([leaf, cls, a - y0, b - y0, c - x0, d - x0, a - ylo[leaf], c - xlo[leaf]], 1)
        return {"pairs": pairs, "bounds": bounds, "tile_class": tile_class, "ncols": ncols}

    def _rows(self, level: int, axis: int, leaf: int) -> np.ndarray:
        """Resampling of the token along ``axis`` to all level-``level`` pixels of ``leaf``:
        ``(n, p)`` linear weights (scores, probabilities) or ``(n,)`` nearest token indices (labels)."""
        start, size = int(self.forest.starts[leaf, axis]), int(self.forest.sizes[leaf, axis])
        size0 = self.shapes[0][axis]
        f = 1 << level
        key = (level, axis, size, start % f, start + size == size0)
        rows = self.cache.get(key)
        if rows is None:
            lo = _level_count_below(np.array([start, start + size]), level, size0, self.shapes[level][axis])
            offsets = level_sample_index(int(lo[0]), int(lo[1]), level, size0) - start
            # the rows of deserialize's own per-axis resampling (token side p -> leaf side), at these pixels
            if self.kind == "labels":
                rows = nearest_index(size, self.patch)[offsets]
            else:
                rows = resample_matrix(self.patch, size, "linear").numpy()[offsets].astype(self.values.dtype)
            self.cache[key] = rows
        return rows

    def __call__(self, level: int, y0: int, x0: int, h: int, w: int) -> Any:
        info = self.levels[level]
        t = y0 // self.tile * info["ncols"] + x0 // self.tile
        cls = int(info["tile_class"][t])
        if cls >= 0:
            return np.uint8(cls)
        channels = self.values.shape[0] if self.kind == "probabilities" else None
        out = np.empty((h, w) if channels is None else (h, w, channels), np.uint8)
        for i, leaf_cls, a, b, c, d, ry, rx in info["pairs"][info["bounds"][t] : info["bounds"][t + 1]].tolist():
            if leaf_cls >= 0:
                out[a:b, c:d] = leaf_cls
                continue
            rows = self._rows(level, 0, i)[ry : ry + b - a]
            cols = self._rows(level, 1, i)[rx : rx + d - c]
            if self.kind == "labels":
                out[a:b, c:d] = self.values[i][rows[:, None], cols]
                continue
            # (K, p, p): columns first, then rows, as deserialize does
            vals = rows @ (self.values[:, i] @ cols.T)
            if self.kind == "scores":
                out[a:b, c:d] = _argmax0(vals)
            else:  # probabilities in [0, 1] -> 0..255
                out[a:b, c:d] = np.rint(vals * 255).transpose(1, 2, 0)
        return out


def _argmax0(values: np.ndarray) -> np.ndarray:
    """``values.argmax(0)`` as uint8 (first maximum on ties), by ``K`` contiguous passes: numpy's
    argmax along a leading axis walks memory with a stride, several times slower."""
    best = values[0].copy()
    out = np.zeros(values.shape[1:], np.uint8)
    for c in range(1, values.shape[0]):
        better = values[c] > best
        out[better] = c
        np.maximum(best, values[c], out=best)
    return out


def _like_geometry(like: Any) -> tuple[tuple[int, int] | None, Any]:
    """``(shape, mpp)`` of ``like``: a slide object with ``shape``/``mpp`` or a slide path."""
    if like is None:
        return None, None
    if isinstance(like, (str, Path)):
        with open_slide(like) as slide:
            return tuple(int(s) for s in slide.shape), slide.mpp
    if not hasattr(like, "shape") or not hasattr(like, "mpp"):
        raise TypeError(f"like must be a Slide (with shape and mpp), a slide path or None, got {type(like).__name__}.")
    return tuple(int(s) for s in like.shape), like.mpp


def _mask_values(values: np.ndarray, probabilities: bool) -> tuple[str, np.ndarray]:
    """``(kind, values)`` of the real tokens' predictions ``(K, N, p, p)``: ``"probabilities"`` (floats
    in [0, 1]), ``"labels"`` (``(N, p, p)`` uint8) or ``"scores"`` (finite floats, ``K >= 2``); float
    predictions are rendered in float64 when given so, else float32."""
    k = values.shape[0]
    float_dtype = np.float64 if values.dtype == np.float64 else np.float32
    if probabilities:
        if values.dtype.kind != "f":
            raise TypeError(f"probabilities=True needs float pred in [0, 1], got dtype {values.dtype}.")
        kind = "probabilities"
        values = values.astype(float_dtype, copy=False)
        # NaN and inf fail these comparisons too: no separate finiteness pass
        if not (values.min() >= 0 and values.max() <= 1):
            raise ValueError("probabilities=True needs pred values in [0, 1] (apply softmax/sigmoid first).")
    elif values.dtype.kind in "biu":
        if k != 1:
            raise ValueError(f"integer pred must be (1, L, p, p) class labels, got {k} channels.")
        if values.size and (int(values.min()) < 0 or int(values.max()) > 255):
            raise ValueError(f"label pred must lie in [0, 255] (uint8 mask), got {values.min()}..{values.max()}.")
        kind, values = "labels", values[0].astype(np.uint8)
    else:
        if k < 2:
            raise ValueError(
                "float pred must be (K >= 2, L, p, p) class scores; threshold one-channel probabilities into "
                "(1, L, p, p) integer labels, or pass probabilities=True."
            )
        if k > 256:
            raise ValueError(f"at most 256 classes fit a uint8 mask, got K={k}.")
        kind = "scores"
        values = values.astype(float_dtype, copy=False)
        check_finite(values, "pred")
    return kind, values


def write_slide_mask(
    path: str | Path,
    forest: Forest,
    pred: Any,
    like: Any = None,
    tile: int = 512,
    probabilities: bool = False,
    mpp: float | Sequence[float] | None = None,
    levels: int | None = None,
    workers: int = 2,
    classes: Any = None,
) -> Path:
    """Depatch SHF predictions tile by tile into a pyramidal mask TIFF (never a full-size canvas).

    Args:
        path: output ``.tif``; its folder must exist; never ``like`` itself (nor a link to it). Written
            atomically.
        forest: the slide's forest, in level-0 pixel coordinates (``forest.spatial_shape`` is the
            slide's ``(H, W)``).
        pred: ``(K, L, p, p)`` float scores (logits or probabilities, ``K >= 2``) written as their
            argmax, uint8 class labels; or ``(1, L, p, p)`` integer class labels in ``[0, 255]``.
            numpy or torch. Padding tokens are ignored.
        like: the source slide (a ``Slide`` or its path): its level-0 shape must equal the forest's,
            and its microns per pixel are copied (so the mask overlays the slide in viewers).
        tile: tile side (a multiple of 16).
        probabilities: write the linearly depatched ``pred`` (``(K, L, p, p)`` floats in ``[0, 1]``)
            quantised to uint8 (``round(255 * v)``), ``K`` channels (OpenSlide reads 1- and 3-channel
            files only), instead of labels.
        mpp: microns per pixel of level 0; overrides ``like``'s.
        levels: number of pyramid levels; ``None``: down to one tile.
        workers: threads rendering and encoding.
        classes: the names (optionally colours) of the label values, e.g. ``{0: "background", 1:
            "tumour"}`` or ``["background", "tumour"]`` (see :func:`~monai_shf.slide.classes.normalize_classes`),
            recorded in the file's ImageDescription (:mod:`monai_shf.slide.classes`), where
            :func:`~monai_shf.slide.mask_to_geojson` finds them; ``None``: no record. Label masks only.

    Level 0 equals the in-memory path: ``deserialize(pred, forest, mode="linear", argmax=True)`` for
    scores (computed in the dtype of ``pred``: float64 tokens give bit-identical argmax, float32 ones
    may differ only on exact near-ties), ``deserialize(pred, forest, mode="nearest")`` for labels.
    Level ``k`` pixel ``(i, j)`` takes level 0's value at :func:`level_sample_index` (an exact
    decimation: no class is blended or invented at reduced levels). deflate + horizontal predictor.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Memory: ``pred`` itself, a per-level leaf/tile index (``O(L + tiles)`` integers) and a few bands
    of encoded tiles: about 0.01 byte per slide pixel at most for the index, nothing per pixel else.
    """
    path = check_output_path(path, "path")
    check_not_input(path, like, "path")
    record = None if classes is None else class_record(classes)
    if record is not None and probabilities:
        raise ValueError("classes names label values: a probabilities=True mask holds none.")
    if not isinstance(forest, Forest):
        raise TypeError(f"forest must be a monai_shf.forest.Forest, got {type(forest).__name__}.")
    if forest.spatial_dims != 2:
        raise ValueError(f"write_slide_mask needs a 2D forest, got spatial_shape {forest.spatial_shape}.")
    check_array(pred, "pred", ndims=(4,), finite=False)
    values = to_numpy(pred)
    k, length, p = values.shape[0], values.shape[1], values.shape[2]
    if length != forest.length or values.shape[3] != p:
        raise ValueError(f"pred must be (K, L={forest.length}, p, p) for this forest, got shape {tuple(values.shape)}.")
    shape, like_mpp = _like_geometry(like)
    if shape is not None and shape != forest.spatial_shape:
        raise ValueError(
            f"like has level-0 shape {shape} but the forest covers {forest.spatial_shape}: "
            "the forest must be built on the same slide (in level-0 pixels)."
        )
    mpp = like_mpp if mpp is None else mpp
    n = forest.num_leaves
    values = values[:, :n]
    kind, values = _mask_values(values, probabilities)
    tile = check_int(tile, "tile", 16)
    shapes = pyramid_shapes(forest.spatial_shape, tile, None if levels is None else check_int(levels, "levels", 1))
    renderer = _MaskRenderer(forest, values, kind, shapes, tile)
    # the per-leaf products are tiny (inner size p): a multi-threaded BLAS only spins (measured here:
    # 50x the CPU time of one thread on a busy machine); the parallelism is the writer's own threads
    with threadpool_limits(limits=1, user_api="blas"):
        return write_pyramid(
            path,
            forest.spatial_shape,
            k if kind == "probabilities" else 1,
            np.uint8,
            renderer,
            tile=tile,
            levels=len(shapes),
            compression="deflate",
            photometric="minisblack",
            mpp=mpp,
            description=f"monai_shf mask: {kind}, {n} leaves, patch {p}" + ("" if record is None else "\n" + record),
            workers=workers,
        )
