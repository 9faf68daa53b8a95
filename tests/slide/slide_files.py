"""Small pyramidal test slides written with tifffile (the reading tests do not depend on the writer)."""

from __future__ import annotations

__all__ = ["area_pyramid", "write_tiff_pyramid", "texture"]

from pathlib import Path

import cv2 as cv
import numpy as np
import tifffile


def area_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """``levels`` exact 2x area-mean levels of an ``(H, W[, C])`` image (OpenCV ``INTER_AREA`` halvings,
    the pyramid in-memory ``serialize`` builds)."""
    out = [image]
    for _ in range(levels - 1):
        prev = out[-1]
        h, w = prev.shape[0] // 2, prev.shape[1] // 2
        out.append(cv.resize(np.ascontiguousarray(prev[: 2 * h, : 2 * w]), (w, h), interpolation=cv.INTER_AREA))
    return out


def write_tiff_pyramid(
    path: Path,
    levels: list[np.ndarray],
    tile: int = 128,
    layout: str = "flat",
    compression: str = "zlib",
    mpp: float | None = None,
) -> Path:
    """Write ``levels`` (level 0 first, ``(H, W[, C])``) as a tiled pyramid.

    ``layout``: ``"flat"`` (reduced-resolution pages in the main IFD chain, no tifffile metadata, as
    other writers make them), ``"subifd"`` (SubIFDs of level 0), ``"ome"`` (OME-TIFF SubIFDs) or
    ``"svs"`` (Aperio: level 0, a stripped thumbnail, the other levels, a label image)."""
    rgb = levels[0].ndim == 3
    photometric = "rgb" if rgb else "minisblack"
    common = {"tile": (tile, tile), "compression": compression, "photometric": photometric}
    resolution = {}
    if mpp is not None and layout in ("flat", "subifd"):
        resolution = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    with tifffile.TiffWriter(path, bigtiff=True, ome=layout == "ome") as w:
        if layout == "flat":
            for k, level in enumerate(levels):
                w.write(level, subfiletype=1 if k else 0, metadata=None, **common, **resolution)
        elif layout in ("subifd", "ome"):
            meta = {"PhysicalSizeX": mpp, "PhysicalSizeY": mpp} if (layout == "ome" and mpp) else {}
            w.write(levels[0], subifds=len(levels) - 1, metadata=meta or None, **common, **resolution)
            for level in levels[1:]:
                w.write(level, subfiletype=1, **common)
        elif layout == "svs":
            h, wd = levels[0].shape[:2]
            desc = f"Aperio Image Library v12.0.15\n{wd}x{h} [0,0 {wd}x{h}] ({tile}x{tile}) |AppMag = 20"
            if mpp is not None:
                desc += f"|MPP = {mpp}"
            w.write(levels[0], description=desc, metadata=None, **common)
            thumb = levels[-1]
            w.write(
                thumb, description="Aperio Image Library v12.0.15\nthumbnail", metadata=None, photometric=photometric
            )
            for level in levels[1:]:
                w.write(level, description="Aperio Image Library v12.0.15\nlevel", metadata=None, **common)
            w.write(
                thumb[: thumb.shape[0] // 2],
                subfiletype=1,
                description="Aperio label",
                metadata=None,
                photometric=photometric,
            )
        else:
            raise ValueError(layout)
    return path


def texture(h: int, w: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """An ``(H, W, C)`` uint8 image with edges of every scale: smooth blobs, a few discs and noise."""
    rng = np.random.default_rng(seed)
    low = cv.resize(rng.random((max(2, h // 64), max(2, w // 64), channels)).astype(np.float32), (w, h))
    image = low.reshape(h, w, channels) * 150
    yy, xx = np.mgrid[:h, :w]
    for _ in range(6):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(8, max(9, min(h, w) // 5))
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] += 90
    image += rng.normal(0, 4, image.shape)
    out = np.clip(image, 0, 255).astype(np.uint8)
    return out if channels > 1 else out[..., 0]
