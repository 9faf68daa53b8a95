"""The :class:`Slide` interface: a lazy, read-only pyramidal 2D image, whatever reads it.

Backends implement :meth:`Slide._read_region` and fill the level table; argument checks and the level
geometry live here. The backends are :class:`~monai_shf.slide.tiff_backend.TiffSlide` (tifffile) and
:class:`~monai_shf.slide.wsi_backend.WSIReaderSlide` (MONAI's OpenSlide / cuCIM ``WSIReader``);
:func:`~monai_shf.slide.reader.open_slide` chooses one. No MONAI import.

Level geometry: ``level_shapes[k] = (H_k, W_k)``; a level-``k`` pixel covers ``level_scales[k] =
(sy, sx)`` level-0 pixels, ``sy = H_0 / H_k`` (likewise ``sx``) except where ``H_k`` is what an integer
factor ``f`` gives by floor or ceil division (``H_0 // f`` or ``-(-H_0 // f)``): then exactly ``f``, so
2x pyramids of odd sizes map pixel ``i`` to level-0 pixels ``[f i, f (i + 1))``. ``downsamples[k]`` is
the mean of the two (OpenSlide's convention): 4.0, 4.016, ... whatever the file holds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from monai_shf.validation import check_int

__all__ = ["Slide", "MAX_SLIDE_PIXELS", "check_slide_pixels"]

# level-0 pixels a slide may declare (``max_pixels`` of open_slide / TiffSlide): 2**36, a 262144^2
# slide, several times the largest scans (about 2e10 pixels); a forged header claiming more is refused
# before the forest or a read sizes anything from it
MAX_SLIDE_PIXELS = 1 << 36


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


def check_slide_pixels(path: str, shape: Sequence[int], max_pixels: int) -> None:
    """``ValueError`` naming the file and the limit when level 0 declares more than ``max_pixels``."""
    h, w = (int(v) for v in shape[:2])
    if h * w > max_pixels:
        raise ValueError(
            f"{path}: the slide declares {h} x {w} = {h * w} level-0 pixels, more than max_pixels={max_pixels} "
            f"(a forged or corrupt header?); pass a larger max_pixels to open_slide / TiffSlide to read it."
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
