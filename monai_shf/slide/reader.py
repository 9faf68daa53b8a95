"""Opening slides: :func:`open_slide` chooses the backend, :func:`owned_slide` is the one ownership rule.

Backends behind the :class:`~monai_shf.slide.base.Slide` interface: :mod:`~monai_shf.slide.tiff_backend`
(tifffile: SVS, tiled TIFF, OME-TIFF; no MONAI) and :mod:`~monai_shf.slide.wsi_backend` (MONAI's
OpenSlide / cuCIM ``WSIReader``, imported only when such a slide is opened). Dependencies point one way:
base <- backends <- this factory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from monai_shf.enums import SlideBackend, values
from monai_shf.validation import check_choice, check_int

from .base import MAX_SLIDE_PIXELS, Slide, check_slide_pixels
from .tiff_backend import DEFAULT_CACHE_BYTES, NotTiffError, TiffSlide

__all__ = ["open_slide", "owned_slide", "SLIDE_BACKENDS"]

SLIDE_BACKENDS = values(SlideBackend)


def open_slide(
    path: str | os.PathLike | Slide,
    backend: str = "auto",
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    workers: int = 2,
    max_pixels: int | None = None,
    max_tile_bytes: int | None = None,
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
        max_pixels: most level-0 pixels the slide may declare (every backend; ``None``:
            :data:`MAX_SLIDE_PIXELS`); a larger one is a ``ValueError`` naming the file and the limit.
        max_tile_bytes: most bytes of one decoded tile (tifffile backend; ``None``: :data:`MAX_TILE_BYTES`).

    Returns:
        a :class:`Slide`; close it (or use it as a context manager) to release the file.
    """
    if isinstance(path, Slide):
        return path
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a slide file path, got {type(path).__name__}.")
    backend = check_choice(backend, "backend", SLIDE_BACKENDS)
    limit = MAX_SLIDE_PIXELS if max_pixels is None else check_int(max_pixels, "max_pixels", 1)
    if not Path(path).is_file():
        raise ValueError(f"slide file not found: {os.fspath(path)}")
    tiff = {"cache_bytes": cache_bytes, "workers": workers, "max_pixels": limit, "max_tile_bytes": max_tile_bytes}
    if backend == "tifffile":
        return TiffSlide(path, **tiff)
    if backend != "auto":
        from .wsi_backend import WSIReaderSlide

        return _bounded(WSIReaderSlide(path, backend=backend), limit)
    try:
        return TiffSlide(path, **tiff)
    except NotTiffError as tiff_error:
        from .wsi_backend import WSIReaderSlide, available_backends

        for name in available_backends():
            try:
                slide = WSIReaderSlide(path, backend=name)
            except ValueError:
                continue
            return _bounded(slide, limit)
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


def _bounded(slide: Slide, max_pixels: int) -> Slide:
    try:
        check_slide_pixels(slide.path, slide.shape, max_pixels)
    except ValueError:
        slide.close()
        raise
    return slide
