"""Generated tissue-like data: the embedded default when no real data is at hand.

Not for quality claims (use real data: ``MONAI_SHF_DATA``, see :func:`monai_shf.utils.find_real_data`); for demos, smoke runs and unit tests.
"""

from __future__ import annotations

import cv2 as cv
import numpy as np

__all__ = ["synthetic_tissue_2d", "synthetic_organs_3d"]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    small = rng.standard_normal((max(2, int(shape[0] / scale)), max(2, int(shape[1] / scale)))).astype(np.float32)
    field = cv.resize(small, (shape[1], shape[0]), interpolation=cv.INTER_CUBIC)
    return (field - field.mean()) / (field.std() + 1e-6)


def synthetic_tissue_2d(size: int = 1024, seed: int = 0, num_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A pathology-like RGB image with irregular regions and fine boundaries, and its label.

    Returns:
        image ``(3, size, size)`` uint8 and label ``(1, size, size)`` uint8 in ``[0, num_classes)``.
    """
    if not 2 <= num_classes <= 4:
        raise ValueError(f"num_classes must be 2, 3 or 4 (one stain colour each), got {num_classes}.")
    rng = np.random.default_rng(seed)
    shape = (size, size)
    # irregular regions: a multi-scale smooth field cut at quantiles, with a rough boundary
    field = (
        _smooth_noise(rng, shape, size / 6)
        + 0.35 * _smooth_noise(rng, shape, size / 40)
        + 0.1 * _smooth_noise(rng, shape, size / 200)
    )
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


def synthetic_organs_3d(shape: tuple[int, int, int] = (96, 96, 64), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like volume: a body in air with two organ-like ellipsoids, and its label.

    Returns:
        image ``shape`` float32 in Hounsfield-like units (air -1000, soft tissue ~40, organ A ~90,
        organ B ~160, noise sd 15) and label ``shape`` uint8 (0 background, 1 organ A, 2 organ B).
    """
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij"))
    warp = 0.08 * np.stack(
        [cv.resize(rng.standard_normal((6, 6)).astype(np.float32), (shape[1], shape[0]))[..., None] for _ in range(3)]
    )

    def ellipsoid(centre, radii):
        d = sum(((grid[a] + warp[a] - centre[a]) / radii[a]) ** 2 for a in range(3))
        return d < 1.0

    body = ellipsoid((0, 0, 0), (0.9, 0.75, 1.2))
    organ_a = (
        ellipsoid(
            (rng.uniform(-0.3, -0.1), rng.uniform(-0.3, 0.0), rng.uniform(-0.2, 0.2)),
            (rng.uniform(0.3, 0.4), rng.uniform(0.25, 0.35), 0.5),
        )
        & body
    )
    organ_b = (
        ellipsoid(
            (rng.uniform(0.2, 0.4), rng.uniform(0.1, 0.3), rng.uniform(-0.2, 0.2)), (0.24, 0.2, rng.uniform(0.3, 0.4))
        )
        & body
        & ~organ_a
    )
    image = np.full(shape, -1000.0, np.float32)
    image[body] = 40.0
    image[organ_a] = 90.0
    image[organ_b] = 160.0
    image += rng.normal(0, 15, shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[organ_a] = 1
    label[organ_b] = 2
    return image, label
