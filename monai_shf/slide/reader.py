"""Lazy whole-slide images: the :class:`Slide` interface and its tifffile backend.

A slide is never loaded whole. :func:`open_slide` reads the file's structure (levels, tiles, tags) and
:meth:`Slide.read` decodes only the tiles a region touches, through a bounded LRU cache of decoded
tiles. Everything here is numpy + tifffile (+ imagecodecs for JPEG / JPEG 2000 / deflate tiles); no
MONAI import. Formats tifffile cannot read (MRXS, NDPI, DICOM WSI) go through
:mod:`monai_shf.slide.wsi_backend` (MONAI's OpenSlide / cuCIM ``WSIReader``), behind the same interface.

Levels (tifffile backend), in this order of preference:

* SVS and OME-TIFF: the pyramid of tifffile's first series (Aperio levels, OME SubIFDs);
* other TIFFs: the first page, plus every reduced-resolution page (SubIFDs of the first page, or
  pages of the main IFD chain with the reduced-resolution ``NewSubfileType`` bit) with the same
  samples and dtype, strictly smaller and with the same aspect ratio (thumbnails, labels and macro
  images of other aspect ratios are skipped), sorted from the largest.

Level geometry: ``level_shapes[k] = (H_k, W_k)``; a level-``k`` pixel covers ``level_scales[k] =
(sy, sx)`` level-0 pixels, ``sy = H_0 / H_k`` (likewise ``sx``) except where ``H_k`` is what an integer
factor ``f`` gives by floor or ceil division (``H_0 // f`` or ``-(-H_0 // f)``): then exactly ``f``, so
2x pyramids of odd sizes map pixel ``i`` to level-0 pixels ``[f i, f (i + 1))``. ``downsamples[k]`` is
the mean of the two (OpenSlide's convention): 4.0, 4.016, ... whatever the file holds.

Untrusted files: the tile table is checked against the file size and the level shape when the slide
is opened, a tile larger than ``MAX_TILE_BYTES`` decoded is refused, a corrupt tile is a ``ValueError``
naming the file, level and tile, and a read allocates only the region asked for plus the tiles it
touches (a stripped page is read strip by strip, each strip acting as a tile).
"""

from __future__ import annotations

import math
import os
import re
import threading
import xml.etree.ElementTree as ET
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from monai_shf.validation import check_choice, check_int

__all__ = [
    "owned_slide",
    "Slide",
    "TiffSlide",
    "NotTiffError",
    "open_slide",
    "SLIDE_BACKENDS",
    "DEFAULT_CACHE_BYTES",
    "MAX_TILE_BYTES",
]

SLIDE_BACKENDS = ("auto", "tifffile", "openslide", "cucim")
# decoded tiles kept per open slide: two rows of 512^2 RGB tiles of a 64K^2 level (the most a
# tile-row-ordered pass over one level needs at once), so tokens decode each tile once
DEFAULT_CACHE_BYTES = 256 << 20
# a decoded tile (or strip) larger than this is refused: no slide format needs one, and a forged
# tag claiming a huge tile must not trigger a multi-GB allocation
MAX_TILE_BYTES = 256 << 20


class NotTiffError(ValueError):
    """The file is not a TIFF tifffile can parse (``open_slide(backend="auto")`` then tries the other
    backends; a TIFF with a bad tile table or a corrupt tile is a plain ``ValueError``)."""


class Slide(ABC):
    """A lazy, read-only pyramidal 2D image (a whole-slide image).

    Coordinates are array-axis order (row, col) in the pixels of the level read; level 0 is the full
    resolution. Subclasses implement :meth:`_read_region` and fill :attr:`level_shapes` etc.; argument
    checks live here.

    Attributes:
        path: the file.
        level_shapes: ``((H0, W0), (H1, W1), ...)``, level 0 first, decreasing.
        num_channels: samples per pixel (3 for RGB, 1 for label slides).
        dtype: numpy dtype of the pixels.
        mpp: ``(y, x)`` microns per pixel at level 0, or None when the file does not say.
    """

    path: str
    level_shapes: tuple[tuple[int, int], ...]
    num_channels: int
    dtype: np.dtype
    mpp: tuple[float, float] | None
    _decodes: list[int]

    @property
    def level_decodes(self) -> tuple[int, ...]:
        """Tiles (or strips; regions for backends that cache themselves) decoded so far, per level."""
        return tuple(self._decodes)

    @property
    def tile_decodes(self) -> int:
        """Tiles decoded so far by this object, all levels (tests and benchmarks count them)."""
        return sum(self._decodes)

    # ------------------------------------------------------------------ geometry
    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of level 0."""
        return self.level_shapes[0]

    @property
    def level_count(self) -> int:
        return len(self.level_shapes)

    @property
    def level_scales(self) -> tuple[tuple[float, float], ...]:
        """``(sy, sx)`` level-0 pixels per level pixel along each axis (see the module docstring)."""
        h0, w0 = self.shape
        return tuple((_axis_scale(h0, h), _axis_scale(w0, w)) for h, w in self.level_shapes)

    @property
    def downsamples(self) -> tuple[float, ...]:
        """``(1.0, d1, d2, ...)``: mean of the two axis scales of every level (any factors)."""
        return tuple((sy + sx) / 2.0 for sy, sx in self.level_scales)

    def check_level(self, level: Any, name: str = "level") -> int:
        """``level`` as an int in ``[0, level_count)``, or a ``ValueError`` naming the file."""
        level = check_int(level, name)
        if not 0 <= level < self.level_count:
            raise ValueError(
                f"{name}={level} is out of range for {self.path}: the slide has {self.level_count} level(s) "
                f"(0..{self.level_count - 1}) of shapes {list(self.level_shapes)}."
            )
        return level

    # ------------------------------------------------------------------ reading
    def read(self, level: int, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
        """Read a region of one level.

        Args:
            level: pyramid level (0 = full resolution).
            start: ``(row, col)`` of the region's first pixel, in that level's pixels.
            size: ``(h, w)`` of the region, ``>= 1`` each; the region must lie inside the level.

        Returns:
            ``(C, h, w)`` numpy array of :attr:`dtype` (a new array, C-contiguous).
        """
        level = self.check_level(level)
        start = _pair(start, "start", 0)
        size = _pair(size, "size", 1)
        h, w = self.level_shapes[level]
        if start[0] + size[0] > h or start[1] + size[1] > w:
            raise ValueError(f"region start={start} size={size} exceeds level {level} of {self.path}, shaped {(h, w)}.")
        return self._read_region(level, start, size)

    @abstractmethod
    def _read_region(self, level: int, start: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        """``(C, h, w)`` region of ``level``, arguments already checked."""

    def tile_shape(self, level: int) -> tuple[int, int]:
        """``(th, tw)`` of the level's storage tiles (the unit a read decodes); backends without
        tiles report the whole level."""
        return self.level_shapes[self.check_level(level)]

    # ------------------------------------------------------------------ lifetime
    @abstractmethod
    def close(self) -> None:
        """Release the file handle and the tile cache (idempotent)."""

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to release
            pass

    def __repr__(self) -> str:
        downs = ", ".join(f"{d:g}" for d in self.downsamples)
        return (
            f"{type(self).__name__}({self.path!r}, shape={self.shape}, channels={self.num_channels}, "
            f"dtype={np.dtype(self.dtype).name}, downsamples=({downs}), mpp={self.mpp})"
        )


def _axis_scale(full: int, reduced: int) -> float:
    factor = round(full / reduced)
    if factor >= 1 and reduced in (full // factor, -(-full // factor)):
        return float(factor)
    return full / reduced


def _pair(value: Any, name: str, minimum: int) -> tuple[int, int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)) or len(value) != 2:
        raise TypeError(f"{name} must be a (row, col) pair of integers, got {value!r}.")
    return check_int(value[0], f"{name}[0]", minimum), check_int(value[1], f"{name}[1]", minimum)


# ---------------------------------------------------------------------------------------------
# tifffile backend


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

    Picklable by path: a copy (e.g. in a DataLoader worker) reopens the file with an empty cache.
    """

    def __init__(self, path: str | os.PathLike, cache_bytes: int = DEFAULT_CACHE_BYTES, workers: int = 2):
        self.path = os.fspath(path)
        self.cache_bytes = check_int(cache_bytes, "cache_bytes", 0)
        self.workers = check_int(workers, "workers", 1)
        self._decodes = []
        self._tif: tifffile.TiffFile | None = None
        self._lock = threading.Lock()  # file handle (seek + read)
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
            self._levels = [self._tile_table(p, k, file_size) for k, p in enumerate(pages)]
            first = pages[0]
            self.num_channels = int(first.samplesperpixel)
            self.dtype = np.dtype(first.dtype)
            self.level_shapes = tuple(lv.shape for lv in self._levels)
            self._decodes = [0] * len(self._levels)
            self.mpp = _read_mpp(tif, first)
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
        if tile[0] * tile[1] * samples * itemsize > MAX_TILE_BYTES:
            hint = " (a non-tiled page: convert the file to a tiled pyramid)" if not page.is_tiled else ""
            raise ValueError(
                f"{where}: a tile of {tile[0]}x{tile[1]}x{samples} {np.dtype(page.dtype).name} exceeds the "
                f"{MAX_TILE_BYTES >> 20} MiB limit of one decode{hint}."
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
        return {"path": self.path, "cache_bytes": self.cache_bytes, "workers": self.workers}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["cache_bytes"], state["workers"])

    def close(self) -> None:
        tif = getattr(self, "_tif", None)
        if tif is not None:
            self._tif = None
            tif.close()
        pool = getattr(self, "_pool", None)
        if pool is not None:
            self._pool = None
            pool.shutdown(wait=True)
        if hasattr(self, "_cache"):
            self._cache.clear()
            self._cached = 0

    # ------------------------------------------------------------------ tiles
    def tile_shape(self, level: int) -> tuple[int, int]:
        return self._levels[self.check_level(level)].tile

    def _raw(self, level: int, index: int) -> bytes:
        lv = self._levels[level]
        with self._lock:
            if self._tif is None:
                raise ValueError(f"{self.path} is closed.")
            fh = self._tif.filehandle
            fh.seek(int(lv.offsets[index]))
            data = fh.read(int(lv.counts[index]))
        if len(data) != int(lv.counts[index]):
            raise ValueError(f"{self.path} (level {level}): tile {index} is truncated.")
        return data

    def _decode(self, level: int, index: int, data: bytes) -> np.ndarray:
        """``(C, th, tw)`` tile (edge tiles are cropped to the level)."""
        lv = self._levels[level]
        th, tw = lv.tile
        row, col = divmod(index, lv.grid[1])
        h, w = min(th, lv.shape[0] - row * th), min(tw, lv.shape[1] - col * tw)
        c = self.num_channels
        if not data:  # sparse tile (byte count 0): never written, reads as zeros (TIFF convention)
            return np.zeros((c, h, w), dtype=self.dtype)
        try:
            decoded = lv.page.decode(data, index, jpegtables=lv.jpegtables)[0]
        except Exception as e:
            raise ValueError(
                f"{self.path} (level {level}): tile {index} (row {row}, col {col}) cannot be decoded: "
                f"corrupt or truncated data ({type(e).__name__}: {e})."
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

    def _tiles(self, level: int, indices: list[int]) -> dict[int, np.ndarray]:
        """Decoded tiles by index: cached ones, the others decoded (in threads) and cached.

        The cache is guarded by a lock, so threads may share one slide (two threads missing the same
        tile may both decode it; the result is the same)."""
        out: dict[int, np.ndarray] = {}
        missing = []
        with self._cache_lock:
            for i in indices:
                tile = self._cache.get((level, i))
                if tile is None:
                    missing.append(i)
                else:
                    self._cache.move_to_end((level, i))
                    out[i] = tile
        if missing:
            raw = [self._raw(level, i) for i in missing]
            if len(missing) > 1 and self.workers > 1:
                with self._cache_lock:
                    if self._pool is None:
                        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="slide-decode")
                tiles = list(self._pool.map(lambda a: self._decode(level, *a), zip(missing, raw)))
            else:
                tiles = [self._decode(level, i, d) for i, d in zip(missing, raw)]
            with self._cache_lock:
                self._decodes[level] += len(missing)
                for i, tile in zip(missing, tiles):
                    out[i] = tile
                    self._remember((level, i), tile)
        return out

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
        lv = self._levels[level]
        (y, x), (h, w), (th, tw) = start, size, lv.tile
        rows = range(y // th, (y + h - 1) // th + 1)
        cols = range(x // tw, (x + w - 1) // tw + 1)
        tiles = self._tiles(level, [r * lv.grid[1] + c for r in rows for c in cols])
        out = np.empty((self.num_channels, h, w), dtype=self.dtype)
        for r in rows:
            for c in cols:
                tile = tiles[r * lv.grid[1] + c]
                y0, x0 = max(y, r * th), max(x, c * tw)
                y1, x1 = min(y + h, (r + 1) * th), min(x + w, (c + 1) * tw)
                out[:, y0 - y : y1 - y, x0 - x : x1 - x] = tile[:, y0 - r * th : y1 - r * th, x0 - c * tw : x1 - c * tw]
        return out


def _level_pages(tif: tifffile.TiffFile) -> list[Any]:
    """The pages of the pyramid levels, level 0 first (see the module docstring)."""
    if not tif.pages:
        raise ValueError(f"{tif.filename}: the TIFF holds no image.")
    series = tif.series[0] if tif.series else None
    if series is not None and (tif.is_svs or tif.is_ome or len(series.levels) > 1):
        pages = [lv.keyframe for lv in series.levels]
        if all(p is not None for p in pages):
            return pages
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


# ---------------------------------------------------------------------------------------------


def open_slide(
    path: str | os.PathLike | Slide,
    backend: str = "auto",
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    workers: int = 2,
) -> Slide:
    """Open a whole-slide image lazily.

    Args:
        path: the slide file (an open :class:`Slide` is returned as is).
        backend: ``"tifffile"`` (SVS, tiled TIFF, OME-TIFF), ``"openslide"`` / ``"cucim"`` (through
            MONAI's ``WSIReader``; any format those libraries read) or ``"auto"``: tifffile when the file
            is a TIFF, else OpenSlide, else cuCIM, whichever is installed (a TIFF that tifffile parses but
            finds broken is reported as such, not handed to another library).
        cache_bytes: bound of the decoded-tile cache (tifffile backend).
        workers: decoding threads of one read (tifffile backend).

    Returns:
        a :class:`Slide`; close it (or use it as a context manager) to release the file.
    """
    if isinstance(path, Slide):
        return path
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a slide file path, got {type(path).__name__}.")
    backend = check_choice(backend, "backend", SLIDE_BACKENDS)
    if not Path(path).is_file():
        raise ValueError(f"slide file not found: {os.fspath(path)}")
    if backend == "tifffile":
        return TiffSlide(path, cache_bytes=cache_bytes, workers=workers)
    if backend != "auto":
        from .wsi_backend import WSIReaderSlide

        return WSIReaderSlide(path, backend=backend)
    try:
        return TiffSlide(path, cache_bytes=cache_bytes, workers=workers)
    except NotTiffError as tiff_error:
        from .wsi_backend import WSIReaderSlide, available_backends

        for name in available_backends():
            try:
                return WSIReaderSlide(path, backend=name)
            except ValueError:
                continue
        raise tiff_error from None


@contextmanager
def owned_slide(slide: Slide | str | os.PathLike, **open_options: Any) -> Iterator[Slide]:
    """``with owned_slide(slide) as s:`` the one rule of slide ownership: an open :class:`Slide` is the
    caller's and is used as it is (left open); a path is opened here (:func:`open_slide` with
    ``open_options``) and closed when the block ends, also on error."""
    if isinstance(slide, Slide):
        yield slide
        return
    opened = open_slide(slide, **open_options)
    try:
        yield opened
    finally:
        opened.close()
