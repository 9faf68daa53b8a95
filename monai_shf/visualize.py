"""PNG figures of SHF patching: forest overlays and input / forest / reconstruction / truth panels.

Drawn with OpenCV (no plotting dependency). 3D inputs are shown on one slice (the middle one along
the last axis by default) with the leaves that cross it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2 as cv
import numpy as np

from monai_shf.forest import Forest, to_uint8
from monai_shf.utils import atomic_write
from monai_shf.validation import to_numpy

__all__ = ["to_rgb", "forest_overlay", "panels", "save_png", "line_chart", "token_strip", "label_rgb"]


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


# distinct, colour-blind-friendly line colours (Okabe-Ito), RGB
_LINE_COLORS = ((0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167), (230, 159, 0), (86, 180, 233), (0, 0, 0))


def _nice_ticks(low: float, high: float, count: int = 5) -> np.ndarray:
    """About ``count`` round tick values covering ``[low, high]``."""
    span = max(high - low, 1e-12)
    raw = span / max(count - 1, 1)
    magnitude = 10 ** np.floor(np.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=10 * magnitude)
    return np.arange(np.ceil(low / step) * step, high + 0.5 * step, step)


def line_chart(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    title: str = "",
    x_label: str = "",
    y_label: str = "",
    size: tuple[int, int] = (720, 440),
    y_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """A line chart ``(H, W, 3)`` uint8 (drawn with OpenCV): one polyline with markers per series.

    Args:
        series: ``name -> (x values, y values)``, in legend order; empty series are listed only.
        title, x_label, y_label: captions.
        size: ``(width, height)`` in pixels.
        y_range: fixed ``(low, high)`` of the y axis; default from the data.
    """
    width, height = int(size[0]), int(size[1])
    if width < 200 or height < 150:
        raise ValueError(f"size must be at least (200, 150) pixels, got {size!r}.")
    points = [(np.asarray(x, float), np.asarray(y, float)) for x, y in series.values()]
    for name, (x, y) in zip(series, points):
        if x.shape != y.shape or x.ndim != 1:
            raise ValueError(f"series {name!r}: x and y must be 1D of the same length, got {x.shape} and {y.shape}.")
    finite_x = np.concatenate([x[np.isfinite(x)] for x, _ in points] + [np.zeros(1)])
    finite_y = np.concatenate([y[np.isfinite(y)] for _, y in points] + [np.zeros(0)])
    x_low, x_high = 0.0, float(max(finite_x.max(), 1e-9))
    if y_range is not None:
        y_low, y_high = float(y_range[0]), float(y_range[1])
    elif finite_y.size:
        y_low, y_high = float(finite_y.min()), float(finite_y.max())
    else:
        y_low, y_high = 0.0, 1.0
    if y_high <= y_low:
        y_low, y_high = y_low - 0.5, y_high + 0.5
    left, right, top, bottom = 64, 16, 36, 48
    canvas = np.full((height, width, 3), 255, np.uint8)
    plot_w, plot_h = width - left - right, height - top - bottom

    def to_px(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        px = left + (x - x_low) / (x_high - x_low) * plot_w
        py = top + (1 - (y - y_low) / (y_high - y_low)) * plot_h
        return np.stack([px, py], axis=-1).round().astype(np.int32)

    font, grey = cv.FONT_HERSHEY_SIMPLEX, (200, 200, 200)
    for t in _nice_ticks(x_low, x_high):
        if x_low <= t <= x_high:
            ((px, _),) = to_px(np.array([t]), np.array([y_low]))
            cv.line(canvas, (int(px), top), (int(px), top + plot_h), grey, 1)
            cv.putText(canvas, f"{t:g}", (int(px) - 12, top + plot_h + 16), font, 0.4, (0, 0, 0), 1, cv.LINE_AA)
    for t in _nice_ticks(y_low, y_high):
        if y_low <= t <= y_high:
            ((_, py),) = to_px(np.array([x_low]), np.array([t]))
            cv.line(canvas, (left, int(py)), (left + plot_w, int(py)), grey, 1)
            cv.putText(canvas, f"{t:.3g}", (4, int(py) + 4), font, 0.4, (0, 0, 0), 1, cv.LINE_AA)
    cv.rectangle(canvas, (left, top), (left + plot_w, top + plot_h), (0, 0, 0), 1)
    cv.putText(canvas, title, (left, 22), font, 0.55, (0, 0, 0), 1, cv.LINE_AA)
    cv.putText(
        canvas, x_label, (left + plot_w // 2 - 4 * len(x_label), height - 10), font, 0.45, (0, 0, 0), 1, cv.LINE_AA
    )
    cv.putText(canvas, y_label, (4, top - 8), font, 0.4, (0, 0, 0), 1, cv.LINE_AA)
    for i, (name, (x, y)) in enumerate(zip(series, points)):
        color = _LINE_COLORS[i % len(_LINE_COLORS)]
        keep = np.isfinite(x) & np.isfinite(y)
        pts = to_px(x[keep], np.clip(y[keep], y_low, y_high))
        if len(pts) > 1:
            cv.polylines(canvas, [pts.reshape(-1, 1, 2)], False, color, 2, cv.LINE_AA)
        for p in pts:
            cv.circle(canvas, (int(p[0]), int(p[1])), 3, color, -1, cv.LINE_AA)
        legend_y = top + 16 + 18 * i
        cv.line(canvas, (left + 10, legend_y - 4), (left + 34, legend_y - 4), color, 2, cv.LINE_AA)
        cv.putText(canvas, name, (left + 40, legend_y), font, 0.45, (0, 0, 0), 1, cv.LINE_AA)
    return canvas


def token_strip(
    tokens: Any, token_mask: Any = None, columns: int = 32, gap: int = 1, labels: bool = False
) -> np.ndarray:
    """SHF tokens laid out in reading order as a mosaic ``(H, W, 3)`` uint8 (the paper's token strips).

    Args:
        tokens: ``(C, L, p, p)`` (or ``(C, L, p, p, p)``: the middle slice of each token is shown);
            more than 3 channels: the first 3; min-max scaled over the real tokens.
        token_mask: ``(L,)`` bool, True for real tokens; padding tokens are drawn grey.
        columns: tokens per row.
        gap: white pixels between tokens.
        labels: ``tokens`` are ``(1, L, p, ...)`` class indices, drawn in :func:`label_rgb`'s colours.
    """
    x = to_numpy(tokens).astype(np.float32)
    if x.ndim == 5:
        x = x[..., x.shape[-1] // 2]
    if x.ndim != 4:
        raise ValueError(f"tokens must be (C, L, p, p) or (C, L, p, p, p), got shape {x.shape}.")
    length, p = x.shape[1], x.shape[2]
    mask = np.ones(length, bool) if token_mask is None else to_numpy(token_mask).astype(bool).reshape(-1)
    if mask.shape != (length,):
        raise ValueError(f"token_mask must be ({length},), got {mask.shape}.")
    columns = max(1, min(int(columns), length))
    if labels:
        if x.shape[0] != 1:
            raise ValueError(f"labels=True needs (1, L, p, ...) class indices, got {x.shape[0]} channels.")
        pixels = np.moveaxis(label_rgb(x[0].reshape(length * p, p)).reshape(length, p, p, 3), -1, 0).copy()
    else:
        real = x[:, mask] if mask.any() else x
        low, high = float(real.min()), float(real.max())
        scaled = np.clip((x - low) / (high - low if high > low else 1.0), 0, 1)
        pixels = (scaled * 255).round().astype(np.uint8)[:3]
    if pixels.shape[0] == 1:
        pixels = np.repeat(pixels, 3, axis=0)
    elif pixels.shape[0] == 2:
        pixels = np.concatenate([pixels, pixels[:1]], axis=0)
    pixels[:, ~mask] = 160
    rows = -(-length // columns)
    cell = p + gap
    out = np.full((rows * cell - gap, columns * cell - gap, 3), 255, np.uint8)
    for i in range(length):
        r, c = divmod(i, columns)
        out[r * cell : r * cell + p, c * cell : c * cell + p] = np.moveaxis(pixels[:, i], 0, -1)
    return out


# class colours: background black, then Okabe-Ito
_CLASS_COLORS = np.array(
    [(0, 0, 0), (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0)], np.uint8
)


def label_rgb(labels: Any, slice_index: int | None = None) -> np.ndarray:
    """Class indices ``(H, W)`` / ``(1, H, W)`` / ``(1, H, W, D)`` to an ``(H, W, 3)`` uint8 picture, one
    fixed colour per class (so a prediction and its ground truth are coloured alike); 3D: one slice
    along the last axis (the middle one by default)."""
    x = to_numpy(labels)
    if x.ndim in (3, 4) and x.shape[0] == 1:
        x = x[0]
    if x.ndim == 3:
        x = x[..., x.shape[-1] // 2 if slice_index is None else slice_index]
    if x.ndim != 2:
        raise ValueError(f"labels must be (H, W), (1, H, W) or (1, H, W, D) class indices, got shape {x.shape}.")
    if np.issubdtype(x.dtype, np.floating) and not np.array_equal(x, np.round(x)):
        raise ValueError("labels must hold class indices (integers), not probabilities.")
    index = x.astype(np.int64)
    if index.size and index.min() < 0:
        raise ValueError("labels must be >= 0.")
    return _CLASS_COLORS[index % len(_CLASS_COLORS)]
