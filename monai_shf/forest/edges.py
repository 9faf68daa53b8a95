"""Edge maps that drive the forest: Gaussian blur + Canny (2D, OpenCV) and a 3D Canny (ITK).

Any dtype, range and channel count is accepted. The image is first brought to 8 bits the way the
paper's thresholds expect (they are grey levels of an 8-bit image): ``uint8`` is used as is, ``bool``
becomes 0/255, anything else is min-max scaled over the whole image to 0..255 (a constant image
gives no edges). Channels, in 2D with ``channel_reduction="max"`` (default, as the paper's
``cv.Canny`` on an RGB image): the gradient of the channel with the largest gradient at each pixel
(OpenCV's multi-channel Canny; 2 channels are padded to 3 by repetition, more than 3 are averaged);
with ``"mean"``: Canny of the channel mean. In 3D channels are always averaged.

3D methods: ``"itk"`` runs ITK's N-D ``CannyEdgeDetectionImageFilter`` (a true 3D operator; slow,
seconds per 128^3 volume on two cores); ``"slicewise"`` runs the 2D OpenCV operator on every slice
along each of the three axes and joins the results (edges of every orientation, tens of times faster).
The Gaussian of ``kernel_size`` ``k`` has OpenCV's sigma ``0.3 * ((k - 1) / 2 - 1) + 0.8``
(``k = 1``: no blur). ITK thresholds a plain gradient magnitude while OpenCV's Canny thresholds a
3x3 Sobel (L1) response, about 8x larger for a step edge, so ITK receives ``thresholds / 8``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2 as cv
import numpy as np
import torch

from monai_shf.validation import check_array, check_choice, check_int, to_numpy

__all__ = ["edge_map", "to_uint8", "check_edge_args", "EDGE_METHODS", "CHANNEL_REDUCTIONS"]

EDGE_METHODS = ("itk", "slicewise")
CHANNEL_REDUCTIONS = ("max", "mean")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``image`` (any shape) as uint8: uint8 unchanged, bool as 0/255, else min-max to 0..255."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == bool:
        return image.view(np.uint8) * np.uint8(255)
    lo, hi = float(image.min()), float(image.max())
    if hi <= lo:
        return np.zeros(image.shape, dtype=np.uint8)
    scaled = (image.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def check_edge_args(kernel_size: Any, thresholds: Any) -> tuple[int, float, float]:
    """``(k, low, high)`` from a Gaussian ``kernel_size`` (odd, >= 1) and Canny ``thresholds``
    ``(low, high)`` with ``0 <= low <= high``, or a ``ValueError``/``TypeError`` naming the argument."""
    k = check_int(kernel_size, "kernel_size", 1)
    if k % 2 == 0:
        raise ValueError(f"kernel_size must be odd (a Gaussian kernel side), got {k}.")
    if not isinstance(thresholds, (Sequence, np.ndarray)) or len(thresholds) != 2:
        raise TypeError(f"thresholds must be a pair (low, high), got {thresholds!r}.")
    low, high = (float(t) for t in thresholds)
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high < low:
        raise ValueError(f"thresholds must satisfy 0 <= low <= high, got {tuple(thresholds)}.")
    return k, low, high


def _canny_2d(planes: np.ndarray, k: int, low: float, high: float) -> np.ndarray:
    """Canny of a ``(H, W)`` or channel-last ``(H, W, 3)`` uint8 image; returns ``(H, W)`` bool."""
    blurred = cv.GaussianBlur(planes, (k, k), 0) if k > 1 else planes
    return cv.Canny(blurred, low, high) > 0


def _sigma(k: int) -> float:
    return 0.3 * ((k - 1) * 0.5 - 1) + 0.8


def _edges_2d(x: np.ndarray, k: int, low: float, high: float, reduction: str) -> np.ndarray:
    c = x.shape[0]
    if c == 1 or reduction == "mean" or c > 3:
        grey = x[0] if c == 1 else to_uint8(x.mean(axis=0, dtype=np.float32))
        return _canny_2d(np.ascontiguousarray(grey), k, low, high)
    planes = [x[i] for i in range(c)] + [x[-1]] * (3 - c)
    return _canny_2d(cv.merge(planes), k, low, high)


def _edges_3d_itk(volume: np.ndarray, k: int, low: float, high: float) -> np.ndarray:
    import itk  # imported lazily: loading ITK takes seconds and 2D users never need it

    image = itk.image_from_array(np.ascontiguousarray(volume, dtype=np.float32))
    kind = itk.Image[itk.F, 3]
    canny = itk.CannyEdgeDetectionImageFilter[kind, kind].New(image)
    canny.SetVariance(_sigma(k) ** 2 if k > 1 else 0.0)
    canny.SetLowerThreshold(low / 8.0)
    canny.SetUpperThreshold(high / 8.0)
    canny.Update()
    return itk.array_view_from_image(canny.GetOutput()) > 0


def _edges_3d_slicewise(volume: np.ndarray, k: int, low: float, high: float) -> np.ndarray:
    out = np.zeros(volume.shape, dtype=bool)
    for axis in range(3):
        moved = np.moveaxis(volume, axis, 0)
        target = np.moveaxis(out, axis, 0)
        for i in range(moved.shape[0]):
            target[i] |= _canny_2d(np.ascontiguousarray(moved[i]), k, low, high)
    return out


def edge_map(
    image: Any,
    kernel_size: int = 3,
    thresholds: Sequence[float] = (50, 100),
    channel_reduction: str = "max",
    method: str = "itk",
) -> Any:
    """Edge map of a channel-first image, the score map of :func:`~monai_shf.forest.build_forest`.

    Args:
        image: ``(C, H, W)`` or ``(C, H, W, D)`` numpy array or torch tensor, any dtype and range.
        kernel_size: odd Gaussian kernel side (1 = no blur). The paper draws from {1, 3, 5, 7}.
        thresholds: Canny ``(low, high)`` hysteresis thresholds on the 8-bit scale.
        channel_reduction: ``"max"`` or ``"mean"`` (2D), see the module docstring.
        method: 3D operator, ``"itk"`` (N-D Canny) or ``"slicewise"``; ignored in 2D.

    Returns:
        ``(H, W)`` / ``(H, W, D)`` bool edge map, numpy for numpy input, a tensor on the input's
        device for tensor input.
    """
    check_array(image, "image", ndims=(3, 4))
    k, low, high = check_edge_args(kernel_size, thresholds)
    reduction = check_choice(channel_reduction, "channel_reduction", CHANNEL_REDUCTIONS)
    method = check_choice(method, "method", EDGE_METHODS)
    x = to_numpy(image)
    if x.ndim == 3:
        edges = _edges_2d(to_uint8(x), k, low, high, reduction)
    else:
        volume = x[0] if x.shape[0] == 1 else x.mean(axis=0, dtype=np.float32)
        volume = to_uint8(volume)
        if any(s < 3 for s in volume.shape) and method == "itk":
            method = "slicewise"  # ITK's Canny needs 3 voxels per side for its derivative stencils
        edges = (_edges_3d_itk if method == "itk" else _edges_3d_slicewise)(volume, k, low, high)
        edges = np.array(edges, dtype=bool)
    if isinstance(image, torch.Tensor):
        return torch.from_numpy(np.ascontiguousarray(edges)).to(image.device)
    return edges
