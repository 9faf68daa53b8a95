"""PNG figures of SHF patching: forest overlays and input / forest / reconstruction / truth panels.

Drawn with OpenCV (no plotting dependency). 3D inputs are shown on one slice (the middle one along
the last axis by default) with the leaves that cross it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2 as cv
import numpy as np

from monai_shf.forest import Forest, to_uint8
from monai_shf.utils import atomic_write
from monai_shf.validation import to_numpy

__all__ = ["to_rgb", "forest_overlay", "panels", "save_png"]


def to_rgb(image: Any, slice_index: int | None = None) -> np.ndarray:
    """``(C, H, W)`` / ``(C, H, W, D)`` (or ``(H, W)``) to an ``(H, W, 3)`` uint8 picture (3D: one
    slice along the last axis; more than 3 channels: the first 3; min-max scaled)."""
    x = to_numpy(image)
    if x.ndim == 2:
        x = x[None]
    if x.ndim == 4:
        x = x[..., x.shape[-1] // 2 if slice_index is None else slice_index]
    x = to_uint8(x[:3].astype(np.float32) if x.dtype != bool else x[:3])
    if x.shape[0] == 1:
        x = np.repeat(x, 3, axis=0)
    elif x.shape[0] == 2:
        x = np.concatenate([x, x[:1]], axis=0)
    return np.ascontiguousarray(np.moveaxis(x, 0, -1))


def forest_overlay(
    image: Any, forest: Forest, color: Sequence[int] = (0, 255, 0), slice_index: int | None = None
) -> np.ndarray:
    """The image with every leaf's outline drawn (``(H, W, 3)`` uint8)."""
    rgb = to_rgb(image, slice_index).copy()
    starts, ends = forest.starts, forest.ends
    if forest.spatial_dims == 3:
        z = forest.spatial_shape[2] // 2 if slice_index is None else slice_index
        keep = (starts[:, 2] <= z) & (z < ends[:, 2])
        starts, ends = starts[keep], ends[keep]
    for (r0, c0), (r1, c1) in zip(starts[:, :2].tolist(), ends[:, :2].tolist()):
        cv.rectangle(rgb, (c0, r0), (c1 - 1, r1 - 1), tuple(int(v) for v in color), 1)
    return rgb


def panels(images: Sequence[np.ndarray], titles: Sequence[str], width: int = 512) -> np.ndarray:
    """Side-by-side ``(H, W, 3)`` panels, each resized to ``width`` and captioned."""
    out = []
    for img, title in zip(images, titles):
        h, w = img.shape[:2]
        scaled = cv.resize(
            img, (width, max(1, round(h * width / w))), interpolation=cv.INTER_AREA if w > width else cv.INTER_NEAREST
        )
        bar = np.full((28, width, 3), 255, np.uint8)
        cv.putText(bar, title, (6, 20), cv.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv.LINE_AA)
        out.append(np.concatenate([bar, scaled], axis=0))
    height = max(p.shape[0] for p in out)
    out = [np.pad(p, ((0, height - p.shape[0]), (0, 4), (0, 0)), constant_values=255) for p in out]
    return np.concatenate(out, axis=1)


def save_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an ``(H, W, 3)`` RGB uint8 picture as PNG (parent folders created; written to a temporary
    name and renamed, so a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv.cvtColor(rgb, cv.COLOR_RGB2BGR)

    def write(tmp: str) -> None:
        if not cv.imwrite(tmp, bgr):
            raise OSError(f"could not write {path}")

    atomic_write(path, write)
    return path
