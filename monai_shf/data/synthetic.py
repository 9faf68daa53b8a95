"""Generated tissue-like data: the embedded default when no real data is at hand.

Not for quality claims (use ``shared/data``); for demos, smoke runs and unit tests.
"""

from __future__ import annotations

import cv2 as cv
import numpy as np

__all__ = ["synthetic_tissue_2d"]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    small = rng.standard_normal((max(2, int(shape[0] / scale)), max(2, int(shape[1] / scale)))).astype(np.float32)
    field = cv.resize(small, (shape[1], shape[0]), interpolation=cv.INTER_CUBIC)
    return (field - field.mean()) / (field.std() + 1e-6)


def synthetic_tissue_2d(size: int = 1024, seed: int = 0, num_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A pathology-like RGB image with irregular regions and fine boundaries, and its label.

    Returns:
        image ``(3, size, size)`` uint8 and label ``(1, size, size)`` uint8 in ``[0, num_classes)``.
    """
    rng = np.random.default_rng(seed)
    shape = (size, size)
    # irregular regions: a multi-scale smooth field cut at quantiles, with a rough boundary
    field = _smooth_noise(rng, shape, size / 6) + 0.35 * _smooth_noise(rng, shape, size / 40) + 0.1 * _smooth_noise(rng, shape, size / 200)
    cuts = np.quantile(field, np.linspace(0, 1, num_classes + 1)[1:-1] + 0.15)
    label = np.digitize(field, cuts).astype(np.uint8)
    # stain-like colours per class plus cell-scale texture
    palette = np.array([[232, 210, 222], [150, 70, 140], [90, 40, 120], [200, 120, 160]], np.float32)[:num_classes]
    texture = 0.5 + 0.5 * np.tanh(2 * _smooth_noise(rng, shape, 6))
    nuclei = (_smooth_noise(rng, shape, 4) > 1.6) & (label > 0)
    img = palette[label] * (0.92 + 0.08 * texture[..., None])
    img[nuclei] = (60, 30, 90)
    img += rng.normal(0, 3, img.shape).astype(np.float32)
    image = np.clip(img, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(image, -1, 0)), label[None]
