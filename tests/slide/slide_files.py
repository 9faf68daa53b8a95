"""Small pyramidal test slides written with tifffile (the reading tests do not depend on the writer)."""

from __future__ import annotations

__all__ = ["area_pyramid", "write_tiff_pyramid", "texture", "write_raw_tiff"]

import struct
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


def write_raw_tiff(
    path: Path,
    shape: tuple[int, int],
    tile: tuple[int, int],
    tiles: list[bytes],
    compression: int = 1,
    samples: int = 1,
    jpegtables: bytes | None = None,
) -> Path:
    """A hand-made little-endian classic TIFF of one tiled uint8 page, for forged files: ``shape``
    and ``tile`` are written as given, and tile ``i`` of the grid stores ``tiles[i % len(tiles)]``
    (each distinct blob once in the file, so a huge declared image can take a few KB)."""
    h, w = shape
    th, tw = tile
    n = -(-h // th) * -(-w // tw)
    blobs, offsets, out = {}, [], bytearray(b"II*\x00\x00\x00\x00\x00")

    def put(data: bytes) -> int:
        out.extend(b"\x00" * (len(out) % 2))
        at = len(out)
        out.extend(data)
        return at

    for data in tiles:
        if data not in blobs:
            blobs[data] = put(data)
    offsets = [blobs[tiles[i % len(tiles)]] for i in range(n)]
    counts = [len(tiles[i % len(tiles)]) for i in range(n)]
    offsets_at = put(struct.pack(f"<{n}I", *offsets))
    counts_at = put(struct.pack(f"<{n}I", *counts))
    bits_at = put(struct.pack(f"<{samples}H", *([8] * samples)))
    entries = [  # (tag, type, count, value or offset); SHORT = 3, LONG = 4, UNDEFINED = 7
        (256, 4, 1, w),
        (257, 4, 1, h),
        (258, 3, samples, bits_at if samples > 2 else 8 | (8 << 16) if samples == 2 else 8),
        (259, 3, 1, compression),
        (262, 3, 1, 2 if samples == 3 else 1),
        (277, 3, 1, samples),
        (284, 3, 1, 1),
        (322, 4, 1, tw),
        (323, 4, 1, th),
        (324, 4, n, offsets_at if n > 1 else offsets[0]),
        (325, 4, n, counts_at if n > 1 else counts[0]),
    ]
    if jpegtables is not None:
        entries.append((347, 7, len(jpegtables), put(jpegtables)))
    ifd = put(struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\x00" * 4)
    out[4:8] = struct.pack("<I", ifd)
    Path(path).write_bytes(bytes(out))
    return Path(path)
