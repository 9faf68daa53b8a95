"""The tifffile backend of :class:`~monai_shf.slide.base.Slide`: SVS, tiled TIFF and OME-TIFF files.

A slide is never loaded whole. Opening it reads the file's structure (levels, tiles, tags) and
:meth:`Slide.read` decodes only the tiles a region touches, through a bounded LRU cache of decoded
tiles. Everything here is numpy + tifffile (+ imagecodecs for JPEG / JPEG 2000 / deflate tiles); no
MONAI import. Formats tifffile cannot read (MRXS, NDPI, DICOM WSI) go through
:mod:`monai_shf.slide.wsi_backend`; :func:`~monai_shf.slide.reader.open_slide` chooses.

Levels (tifffile backend), in this order of preference:

* SVS and OME-TIFF: the pyramid of tifffile's first series (Aperio levels, OME SubIFDs);
* other TIFFs: the first page, plus every reduced-resolution page (SubIFDs of the first page, or
  pages of the main IFD chain with the reduced-resolution ``NewSubfileType`` bit) with the same
  samples and dtype, strictly smaller and with the same aspect ratio (thumbnails, labels and macro
  images of other aspect ratios are skipped), sorted from the largest.

Level geometry (scales, downsamples): see :mod:`monai_shf.slide.base`.

Untrusted files: a slide declaring more than ``max_pixels`` (default :data:`MAX_SLIDE_PIXELS`) level-0
pixels is refused when it is opened, before anything is sized from its tags; the tile table is checked
against the file size and the level shape; a tile larger than ``max_tile_bytes`` (default
:data:`MAX_TILE_BYTES`) decoded is refused; the pyramid levels of SVS and OME files are sorted from the
largest and a level whose shape is not level 0 divided by one downsample (within a pixel of rounding)
is refused; the header of every JPEG, JPEG 2000, WebP or PNG tile is checked against the tile's shape
before the codec allocates anything (lossless byte codecs such as deflate and LZW are bounded by the
tile's size by tifffile itself); a corrupt tile is a ``ValueError`` naming the file, level and tile.
A read allocates only the region asked for plus at most ``workers`` decoded tiles at a time besides
the cache: each tile is copied into the region and dropped (a stripped page is read strip by strip,
each strip acting as a tile).

Processes: tile bytes are read with ``os.pread`` (no shared file offset), and a slide used in a process
forked after it was opened (DataLoader workers on Linux) starts its own decoding threads there, so a
slide opened in the parent may be read by any number of forked workers.
"""

from __future__ import annotations

import math
import os
import re
import threading
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import tifffile

from monai_shf.validation import check_int

from .base import MAX_SLIDE_PIXELS, Slide, check_slide_pixels
from .codec_headers import encoded_shape

__all__ = ["TiffSlide", "NotTiffError", "DEFAULT_CACHE_BYTES", "MAX_TILE_BYTES"]

# decoded tiles kept per open slide: two rows of 512^2 RGB tiles of a 64K^2 level (the most a
# tile-row-ordered pass over one level needs at once), so tokens decode each tile once
DEFAULT_CACHE_BYTES = 256 << 20
# a decoded tile (or strip) larger than this is refused: no slide format needs one, and a forged
# tag claiming a huge tile must not trigger a multi-GB allocation
MAX_TILE_BYTES = 256 << 20


class NotTiffError(ValueError):
    """The file is not a TIFF tifffile can parse (``open_slide(backend="auto")`` then tries the other
    backends; a TIFF with a bad tile table or a corrupt tile is a plain ``ValueError``)."""


@dataclass
class _Level:
    """Tile table of one level: ``offsets``/``counts`` ``(rows * cols,)`` row-major tiles."""

    page: Any
    shape: tuple[int, int]
    tile: tuple[int, int]
    grid: tuple[int, int]
    offsets: np.ndarray
    counts: np.ndarray
    jpegtables: bytes | None


class TiffSlide(Slide):
    """A :class:`Slide` read through tifffile, decoding only the tiles a read touches.

    Args:
        path: SVS, generic tiled TIFF (pyramid as a flat IFD chain or SubIFDs) or OME-TIFF file.
        cache_bytes: bound of the decoded-tile LRU cache in bytes (0 disables caching).
        workers: threads decoding the missing tiles of one read (codecs release the GIL).
        max_pixels: most level-0 pixels ``H * W`` the file may declare (``None``: :data:`MAX_SLIDE_PIXELS`);
            a larger slide is a ``ValueError`` naming the file and the limit.
        max_tile_bytes: most bytes one decoded tile (or strip) may take (``None``: :data:`MAX_TILE_BYTES`).

    Memory of a read: the ``(C, h, w)`` region, at most ``workers`` decoded tiles in flight and the
    cache (``cache_bytes``).

    Picklable by path: a copy (e.g. in a DataLoader worker) reopens the file with an empty cache. A
    slide inherited by a forked process (DataLoader workers on Linux) is read safely there too.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        workers: int = 2,
        max_pixels: int | None = None,
        max_tile_bytes: int | None = None,
    ):
        self.path = os.fspath(path)
        self.cache_bytes = check_int(cache_bytes, "cache_bytes", 0)
        self.workers = check_int(workers, "workers", 1)
        self.max_pixels = MAX_SLIDE_PIXELS if max_pixels is None else check_int(max_pixels, "max_pixels", 1)
        self.max_tile_bytes = (
            MAX_TILE_BYTES if max_tile_bytes is None else check_int(max_tile_bytes, "max_tile_bytes", 1)
        )
        self._decodes = []
        self._tif: tifffile.TiffFile | None = None
        self._fd: int | None = None
        self._pid = os.getpid()
        self._cache_lock = threading.Lock()
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cached = 0
        self._pool: ThreadPoolExecutor | None = None
        self._open()

    # ------------------------------------------------------------------ opening
    def _open(self) -> None:
        if not os.path.isfile(self.path):
            raise ValueError(f"slide file not found: {self.path}")
        try:
            tif = tifffile.TiffFile(self.path)
        except Exception as e:  # tifffile raises TiffFileError, struct.error, ValueError... on bad files
            raise NotTiffError(f"{self.path} is not a TIFF file tifffile can read ({type(e).__name__}: {e}).") from None
        self._tif = tif
        try:
            file_size = os.path.getsize(self.path)
            pages = _level_pages(tif)
            check_slide_pixels(self.path, pages[0].shape[:2], self.max_pixels)
            self._levels = [self._tile_table(p, k, file_size) for k, p in enumerate(pages)]
            first = pages[0]
            self.num_channels = int(first.samplesperpixel)
            self.dtype = np.dtype(first.dtype)
            self.level_shapes = tuple(lv.shape for lv in self._levels)
            self._decodes = [0] * len(self._levels)
            self.mpp = _read_mpp(tif, first)
            # tile bytes are read with pread: no file offset shared by threads or forked processes
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except ValueError:
            self.close()
            raise
        except Exception as e:  # a malformed structure tifffile did not catch at open
            self.close()
            raise ValueError(f"{self.path}: unreadable slide structure ({type(e).__name__}: {e}).") from None

    def _tile_table(self, page: Any, level: int, file_size: int) -> _Level:
        where = f"{self.path} (level {level})"
        shape = tuple(int(s) for s in page.shape)
        samples = int(page.samplesperpixel)
        if len(shape) not in (2, 3) or (len(shape) == 3 and shape[-1] != samples) or samples < 1:
            raise ValueError(f"{where}: expected a 2D page (H, W[, samples]), got shape {shape}.")
        if getattr(page, "planarconfig", 1) not in (1, None) and samples > 1:
            raise ValueError(f"{where}: separate colour planes (PlanarConfiguration 2) are not supported.")
        if int(getattr(page, "tiledepth", 1) or 1) != 1 or int(getattr(page, "imagedepth", 1) or 1) != 1:
            raise ValueError(f"{where}: volumetric tiles are not supported.")
        h, w = shape[:2]
        if page.is_tiled:
            tile = (int(page.tilelength), int(page.tilewidth))
        else:  # strips: tiles of rowsperstrip full-width rows
            rows = int(page.rowsperstrip or h)
            tile = (max(1, min(rows, h)), w)
        if min(tile) < 1:
            raise ValueError(f"{where}: invalid tile shape {tile}.")
        itemsize = np.dtype(page.dtype).itemsize
        limit = self.max_tile_bytes
        if tile[0] * tile[1] * samples * itemsize > limit:
            hint = " (a non-tiled page: convert the file to a tiled pyramid)" if not page.is_tiled else ""
            raise ValueError(
                f"{where}: a tile of {tile[0]}x{tile[1]}x{samples} {np.dtype(page.dtype).name} exceeds the "
                f"{limit / 2**20:g} MiB limit of one decode (max_tile_bytes={limit}){hint}."
            )
        grid = (-(-h // tile[0]), -(-w // tile[1]))
        offsets = np.asarray(page.dataoffsets, dtype=np.int64)
        counts = np.asarray(page.databytecounts, dtype=np.int64)
        if offsets.shape != (grid[0] * grid[1],) or counts.shape != offsets.shape:
            raise ValueError(
                f"{where}: the tile table holds {offsets.size} offsets / {counts.size} byte counts, "
                f"a {h}x{w} level with {tile[0]}x{tile[1]} tiles needs {grid[0] * grid[1]}."
            )
        if (offsets < 0).any() or (counts < 0).any() or (offsets + counts > file_size).any():
            bad = int(np.flatnonzero((offsets < 0) | (counts < 0) | (offsets + counts > file_size))[0])
            raise ValueError(
                f"{where}: tile {bad} claims bytes {int(offsets[bad])}..{int(offsets[bad] + counts[bad])} "
                f"past the end of the file ({file_size} bytes): truncated or corrupt file."
            )
        return _Level(page, (h, w), tile, grid, offsets, counts, page.jpegtables)

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "cache_bytes": self.cache_bytes,
            "workers": self.workers,
            "max_pixels": self.max_pixels,
            "max_tile_bytes": self.max_tile_bytes,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(
            state["path"],
            state["cache_bytes"],
            state["workers"],
            state.get("max_pixels"),
            state.get("max_tile_bytes"),
        )

    def close(self) -> None:
        tif = getattr(self, "_tif", None)
        if tif is not None:
            self._tif = None
            tif.close()
        fd = getattr(self, "_fd", None)
        if fd is not None:
            self._fd = None
            os.close(fd)
        pool = getattr(self, "_pool", None)
        if pool is not None:
            self._pool = None
            if getattr(self, "_pid", None) == os.getpid():  # a forked copy owns no threads of the parent's pool
                pool.shutdown(wait=True)
        if hasattr(self, "_cache"):
            self._cache.clear()
            self._cached = 0

    def _check_process(self) -> None:
        """In a process forked after the slide was opened: new locks (another thread may have held
        the parent's at the fork) and no pool (its threads did not survive the fork)."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._cache_lock = threading.Lock()
            self._pool = None

    # ------------------------------------------------------------------ tiles
    def tile_shape(self, level: int) -> tuple[int, int]:
        return self._levels[self.check_level(level)].tile

    def _raw(self, level: int, index: int) -> bytes:
        lv = self._levels[level]
        fd = self._fd
        if fd is None:
            raise ValueError(f"{self.path} is closed.")
        offset, count = int(lv.offsets[index]), int(lv.counts[index])
        parts = []
        while count > 0:  # pread returns less only at the end of the file (or past 2 GiB per call)
            part = os.pread(fd, count, offset)
            if not part:
                break
            parts.append(part)
            offset += len(part)
            count -= len(part)
        if count > 0:
            raise ValueError(f"{self.path} (level {level}): tile {index} is truncated.")
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _decode(self, level: int, index: int, data: bytes) -> np.ndarray:
        """``(C, th, tw)`` tile (edge tiles are cropped to the level)."""
        lv = self._levels[level]
        th, tw = lv.tile
        row, col = divmod(index, lv.grid[1])
        h, w = min(th, lv.shape[0] - row * th), min(tw, lv.shape[1] - col * tw)
        c = self.num_channels
        if not data:  # sparse tile (byte count 0): never written, reads as zeros (TIFF convention)
            return np.zeros((c, h, w), dtype=self.dtype)
        where = f"{self.path} (level {level}): tile {index} (row {row}, col {col})"
        declared = encoded_shape(int(lv.page.compression), data)
        # a strip may hold fewer rows than rowsperstrip; a tile's codec image is the whole tile
        if declared is not None and (declared[0] > th or declared[1] > tw):
            raise ValueError(
                f"{where}: its codec header declares a {declared[0]}x{declared[1]} image, larger than the "
                f"level's {th}x{tw} tiles: corrupt or forged data (refused before decoding)."
            )
        try:
            decoded = lv.page.decode(data, index, jpegtables=lv.jpegtables)[0]
        except Exception as e:  # MemoryError included: a ValueError naming the file, never a crash
            raise ValueError(
                f"{where} cannot be decoded: corrupt or truncated data ({type(e).__name__}: {e})."
            ) from None
        if decoded is None:
            raise ValueError(f"{self.path} (level {level}): tile {index} cannot be decoded (no codec).")
        decoded = np.asarray(decoded)
        if decoded.size < h * w * c:
            raise ValueError(
                f"{self.path} (level {level}): tile {index} decoded to {decoded.shape}, expected at least "
                f"{h}x{w}x{c} values: corrupt tile."
            )
        if decoded.ndim == 4:  # tifffile segments are (depth, length, width, samples)
            decoded = decoded[0]
        decoded = decoded.reshape(decoded.shape[0], -1, c)[:h, :w]
        return np.ascontiguousarray(decoded.transpose(2, 0, 1), dtype=self.dtype)

    @property
    def cached_bytes(self) -> int:
        """Bytes of decoded tiles held by the cache (at most ``cache_bytes``)."""
        return self._cached

    def _remember(self, key: tuple[int, int], tile: np.ndarray) -> None:
        if tile.nbytes > self.cache_bytes:
            return
        self._cache[key] = tile
        self._cached += tile.nbytes
        while self._cached > self.cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._cached -= old.nbytes

    def _read_region(self, level: int, start: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        """The region, from cached tiles and the missing ones decoded (``workers`` threads), each
        copied into the output as soon as it is decoded and then left to the cache (or dropped).

        The cache is guarded by a lock, so threads may share one slide (two threads missing the same
        tile may both decode it; the result is the same)."""
        self._check_process()
        lv = self._levels[level]
        (y, x), (h, w), (th, tw) = start, size, lv.tile
        out = np.empty((self.num_channels, h, w), dtype=self.dtype)

        def place(index: int, tile: np.ndarray) -> None:
            r, c = divmod(index, lv.grid[1])
            y0, x0 = max(y, r * th), max(x, c * tw)
            y1, x1 = min(y + h, (r + 1) * th), min(x + w, (c + 1) * tw)
            out[:, y0 - y : y1 - y, x0 - x : x1 - x] = tile[:, y0 - r * th : y1 - r * th, x0 - c * tw : x1 - c * tw]

        indices = [
            r * lv.grid[1] + c
            for r in range(y // th, (y + h - 1) // th + 1)
            for c in range(x // tw, (x + w - 1) // tw + 1)
        ]
        hits, missing = [], []
        with self._cache_lock:
            for i in indices:
                tile = self._cache.get((level, i))
                if tile is None:
                    missing.append(i)
                else:
                    self._cache.move_to_end((level, i))
                    hits.append((i, tile))
        for i, tile in hits:
            place(i, tile)
        del hits

        def fetch(index: int) -> None:
            tile = self._decode(level, index, self._raw(level, index))
            place(index, tile)
            with self._cache_lock:
                self._decodes[level] += 1
                self._remember((level, index), tile)

        if len(missing) > 1 and self.workers > 1:
            with self._cache_lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="slide-decode")
                pool = self._pool
            for _ in pool.map(fetch, missing):  # at most `workers` tiles decoded at once
                pass
        else:
            for i in missing:
                fetch(i)
        return out


def _level_pages(tif: tifffile.TiffFile) -> list[Any]:
    """The pages of the pyramid levels, level 0 first (see the module docstring)."""
    if not tif.pages:
        raise ValueError(f"{tif.filename}: the TIFF holds no image.")
    series = tif.series[0] if tif.series else None
    if series is not None and (tif.is_svs or tif.is_ome or len(series.levels) > 1):
        pages = [lv.keyframe for lv in series.levels]
        if all(p is not None for p in pages):
            return _ordered_levels(tif.filename, pages)
    first = tif.pages.first
    candidates = list(first.pages) if first.subifds else []
    for page in tif.pages[1:]:
        if page.subfiletype & 1:  # reduced-resolution version of the image
            candidates.append(page)
    h0, w0 = first.shape[:2]
    levels = [first]
    for page in sorted(candidates, key=lambda p: -p.shape[0] * p.shape[1]):
        h, w = page.shape[:2]
        if page.samplesperpixel != first.samplesperpixel or page.dtype != first.dtype or page.ndim != first.ndim:
            continue
        if not (h < levels[-1].shape[0] and w < levels[-1].shape[1]):
            continue
        # same aspect ratio as level 0 within a pixel of rounding (skips labels, macros, thumbnails of other shapes)
        if abs(h * w0 / w - h0) > 2 * w0 / w + 1:
            continue
        levels.append(page)
    return levels


def _is_reduction(full: Sequence[int], reduced: Sequence[int]) -> bool:
    """Whether ``reduced`` is ``full`` divided by one downsample ``d``, each side rounded (down, up or
    to nearest: within one pixel), i.e. whether the ranges of ``d`` the two sides allow intersect."""
    lo, hi = 0.0, math.inf
    for n, m in zip(full[:2], reduced[:2]):
        lo = max(lo, n / (m + 1))
        if m > 1:
            hi = min(hi, n / (m - 1))
    return lo <= hi


def _ordered_levels(path: str, pages: list[Any]) -> list[Any]:
    """The pyramid pages of a series, level 0 first and the others from the largest; a level that
    is not strictly smaller than the one before it on both axes, or not level 0 divided by one
    downsample, or of other samples or dtype, is a ``ValueError`` naming the file (reading it as a
    level would return another region of the slide than the one asked for)."""
    first = pages[0]
    h0, w0 = (int(v) for v in first.shape[:2])
    rest = sorted(pages[1:], key=lambda p: -int(p.shape[0]) * int(p.shape[1]))
    levels = [first]
    for page in rest:
        shape = tuple(int(v) for v in page.shape[:2])
        prev = tuple(int(v) for v in levels[-1].shape[:2])
        what = None
        if page.samplesperpixel != first.samplesperpixel or page.dtype != first.dtype:
            what = (
                f"{page.samplesperpixel} samples of {page.dtype}, level 0 has {first.samplesperpixel} of {first.dtype}"
            )
        elif not (shape[0] < prev[0] and shape[1] < prev[1]):
            what = f"shape {shape} is not smaller than the level above it, {prev}"
        elif not _is_reduction((h0, w0), shape):
            what = f"shape {shape} is not level 0 {(h0, w0)} divided by one downsample (another aspect ratio)"
        if what is not None:
            shapes = [tuple(int(v) for v in p.shape[:2]) for p in pages]
            raise ValueError(f"{path}: inconsistent pyramid (levels {shapes} in file order): a level's {what}.")
        levels.append(page)
    return levels


_MPP_SVS = re.compile(r"\bMPP\s*=\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)")
_UNIT_MICRONS = {"m": 1e6, "cm": 1e4, "mm": 1e3, "µm": 1.0, "um": 1.0, "nm": 1e-3, "Å": 1e-4, "pm": 1e-6}


def _read_mpp(tif: tifffile.TiffFile, page: Any) -> tuple[float, float] | None:
    """``(y, x)`` microns per pixel of level 0 from SVS, OME-XML or TIFF resolution tags, or None."""
    description = page.description or ""
    if tif.is_svs:
        match = _MPP_SVS.search(description)
        if match and float(match.group(1)) > 0:
            value = float(match.group(1))
            return value, value
    if tif.is_ome:
        mpp = _ome_mpp(tif.ome_metadata)
        if mpp is not None:
            return mpp
    unit = page.tags.get("ResolutionUnit")
    xres, yres = page.tags.get("XResolution"), page.tags.get("YResolution")
    if unit is None or xres is None or yres is None:
        return None
    per = {2: 25400.0, 3: 10000.0}.get(int(unit.value))  # microns per inch / per centimetre
    if per is None:
        return None
    out = []
    for tag in (yres, xres):
        num, den = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
        if not num or not den or num / den <= 0:
            return None
        out.append(per * den / num)
    return out[0], out[1]


def _ome_mpp(xml: str | None) -> tuple[float, float] | None:
    if not xml:
        return None
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] != "Pixels":
            continue
        values = []
        for axis in ("Y", "X"):
            size = element.get(f"PhysicalSize{axis}")
            scale = _UNIT_MICRONS.get(element.get(f"PhysicalSize{axis}Unit", "µm"))
            try:
                value = float(size) * scale if size is not None and scale is not None else math.nan
            except ValueError:
                value = math.nan
            values.append(value)
        if all(math.isfinite(v) and v > 0 for v in values):
            return values[0], values[1]
        return None
    return None
