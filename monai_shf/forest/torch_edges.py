"""Soft edge maps computed with torch ops on the image's device (CUDA or CPU), batched.

The same map as :func:`monai_shf.forest.soft_edge_map`, step by step: the image brought to 8 bits with
its own range (float32 ``(x - lo) * (255 / (hi - lo))``, rounded half to even, clipped; uint8 as is,
bool as 0/255); the rounded channel mean for ``channel_reduction="mean"``; per channel the gradient
magnitude of the Gaussian-blurred 8-bit plane(s): in 2D the separable blur x central difference along
each axis (rows filtered first, then columns, reflect-101 borders, like OpenCV's ``sepFilter2D``), in
3D a separable Gaussian along axes 2, 1, 0 then central differences (0 at the border); the running
maximum over channels for ``"max"``; finally ``round(min(|grad| * 255 / (low / 8), 255))`` as uint8.

The 8-bit conversion is bit-identical to the numpy path; the filters add the same taps in float32 but
OpenCV's vectorised kernels may fuse multiply-adds differently, so a few magnitudes that fall within a
float32 rounding of a half grey level round the other way: the maps differ by at most 1 (of 255) at a
small fraction of pixels (``SOFT_EDGE_TOLERANCE``; measured below ``1e-4`` of the pixels on the real
test images), and the forests built from either map are the same (tested on the real nuclei and MNI152
images).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from monai_shf.validation import check_choice

from .edges import _SOBEL_TO_GRADIENT, _derivative_kernels, _sigma
from .spec import CHANNEL_REDUCTIONS, check_edge_args

__all__ = ["soft_edge_maps", "soft_edge_map_torch", "SOFT_EDGE_TOLERANCE"]

SOFT_EDGE_TOLERANCE = 1
"""Largest difference (grey levels of 255) between the torch and the numpy/OpenCV soft edge maps."""

# pixels processed at once (a chunk of the batch): bounds the float32 temporaries (about 6 per pixel)
_CHUNK_PIXELS = 1 << 26
_WIDE_UNSIGNED = tuple(getattr(torch, name) for name in ("uint16", "uint32", "uint64") if hasattr(torch, name))


def _check_images(images: Any) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a (B, C, H, W) or (B, C, H, W, D) torch tensor, got {type(images).__name__}.")
    x = images.detach().as_subclass(torch.Tensor)
    if x.is_meta:
        raise ValueError(f"images is a tensor on the 'meta' device (shape {tuple(x.shape)}): pass real data.")
    if x.ndim not in (4, 5):
        raise ValueError(f"images must be (B, C, H, W) or (B, C, H, W, D), got shape {tuple(x.shape)}.")
    if any(int(s) == 0 for s in x.shape):
        raise ValueError(f"images must not be empty, got shape {tuple(x.shape)}.")
    if x.is_complex():
        raise TypeError(f"images must have a bool, integer or float dtype, got {x.dtype}.")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError("images must be finite (no NaN or inf).")
    return x


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """``(b, C, *spatial)`` as uint8, every sample scaled with its own range (as ``to_uint8`` does)."""
    if x.dtype == torch.uint8:
        return x
    if x.dtype == torch.bool:
        return x.to(torch.uint8) * 255
    if x.dtype in _WIDE_UNSIGNED:  # torch reduces these only as signed (exact: values fit int64 / float64)
        x = x.to(torch.float64 if x.dtype == torch.uint64 else torch.int64)
    flat = x.reshape(x.shape[0], -1)
    lo, hi = flat.amin(1).to(torch.float64), flat.amax(1).to(torch.float64)
    span = hi - lo
    gain = torch.where(span > 0, 255.0 / torch.where(span > 0, span, 1.0), 0.0).to(torch.float32)
    view = (-1,) + (1,) * (x.ndim - 1)
    scaled = x.to(torch.float32) - lo.to(torch.float32).view(view)
    scaled *= gain.view(view)
    scaled = torch.round_(scaled).clamp_(0, 255).to(torch.uint8)
    return torch.where((span > 0).view(view), scaled, torch.zeros((), dtype=torch.uint8, device=x.device))


def _channel_mean(x: torch.Tensor) -> torch.Tensor:
    """Rounded mean of ``(b, C, ...)`` uint8 channels as ``(b, ...)`` uint8 (integers only)."""
    c = x.shape[1]
    total = x.sum(1, dtype=torch.int32)
    return ((total + c // 2) // c).to(torch.uint8)


def _reflect101(n: int, radius: int, device: torch.device) -> torch.Tensor:
    """Source indices of positions ``-radius .. n + radius - 1`` under reflect-101 (OpenCV's default border)."""
    p = torch.arange(-radius, n + radius, device=device)
    if n == 1:
        return torch.zeros_like(p)
    period = 2 * n - 2
    p = torch.remainder(p, period)
    return torch.where(p >= n, period - p, p)


def _filter(x: torch.Tensor, kernel: np.ndarray, dim: int) -> torch.Tensor:
    """Correlation of float32 ``x`` with the 1D ``kernel`` along ``dim``, reflect-101 borders, taps added in order."""
    if kernel.size == 1 and kernel[0] == 1:
        return x
    radius = kernel.size // 2
    padded = x.index_select(dim, _reflect101(x.shape[dim], radius, x.device))
    n = x.shape[dim]
    out = padded.narrow(dim, 0, n) * float(kernel[0])
    for k in range(1, kernel.size):
        if kernel[k] != 0:
            out += padded.narrow(dim, k, n) * float(kernel[k])
    return out


def _magnitude(planes: torch.Tensor, k: int) -> torch.Tensor:
    """``|grad|`` float32 of the blurred uint8 ``(b, *spatial)`` planes (see the module docstring)."""
    smooth, slope = _derivative_kernels(k)
    x = planes.to(torch.float32)
    if x.ndim == 3:
        along1 = _filter(_filter(x, slope, 2), smooth, 1)
        along0 = _filter(_filter(x, smooth, 2), slope, 1)
        along1 *= along1
        along0 *= along0
        along1 += along0
        return along1.sqrt_()
    gaussian = _gaussian_kernel(k)
    blurred = _filter(_filter(_filter(x, gaussian, 3), gaussian, 2), gaussian, 1)
    total = torch.zeros_like(blurred)
    for dim in range(1, 4):
        n = blurred.shape[dim]
        if n < 3:
            continue
        derivative = blurred.narrow(dim, 2, n - 2) - blurred.narrow(dim, 0, n - 2)
        total.narrow(dim, 1, n - 2).add_(derivative * derivative)
    total *= 0.25
    return total.sqrt_()


def _gaussian_kernel(k: int) -> np.ndarray:
    """The Gaussian of ``cv.GaussianBlur(x, (k, k), sigma)`` (float32, ``[1]`` for ``k = 1``)."""
    if k == 1:
        return np.ones(1, np.float32)
    import cv2 as cv

    return cv.getGaussianKernel(k, _sigma(k), cv.CV_32F).ravel()


def soft_edge_maps(
    images: Any,
    kernel_size: int = 3,
    thresholds: Sequence[float] = (50, 100),
    channel_reduction: str = "max",
) -> torch.Tensor:
    """Soft edge maps of a batch of channel-first images, on their device.

    Args:
        images: ``(B, C, H, W)`` or ``(B, C, H, W, D)`` torch tensor, any dtype and range (each sample is
            brought to 8 bits with its own range). Not modified.
        kernel_size: odd Gaussian kernel side (1 = no blur).
        thresholds: Canny ``(low, high)``: a gradient of ``low / 8`` grey levels per pixel is one edge pixel.
        channel_reduction: ``"max"`` or ``"mean"``, as :func:`~monai_shf.forest.soft_edge_map`.

    Returns:
        ``(B, *spatial)`` uint8 tensor on the images' device, equal to ``soft_edge_map`` of every sample
        up to :data:`SOFT_EDGE_TOLERANCE`. Device memory: the output plus about 24 bytes per pixel of
        a chunk of the batch (at most ``2**26`` pixels at a time).
    """
    x = _check_images(images)
    k, low, _ = check_edge_args(kernel_size, thresholds)
    reduction = check_choice(channel_reduction, "channel_reduction", CHANNEL_REDUCTIONS)
    gain = float(np.float32(255.0 / max(low / _SOBEL_TO_GRADIENT, 1e-6)))
    out = torch.empty((x.shape[0], *x.shape[2:]), dtype=torch.uint8, device=x.device)
    per_sample = math.prod(x.shape[1:])
    chunk = max(1, _CHUNK_PIXELS // per_sample)
    for start in range(0, x.shape[0], chunk):
        u8 = _to_uint8(x[start : start + chunk])
        if u8.shape[1] == 1 or reduction == "mean":
            magnitude = _magnitude(u8[:, 0] if u8.shape[1] == 1 else _channel_mean(u8), k)
        else:
            magnitude = _magnitude(u8[:, 0], k)
            for c in range(1, u8.shape[1]):
                torch.maximum(magnitude, _magnitude(u8[:, c], k), out=magnitude)
        magnitude *= gain
        out[start : start + chunk] = torch.round_(magnitude).clamp_(0, 255).to(torch.uint8)
    return out


def soft_edge_map_torch(
    image: Any, kernel_size: int = 3, thresholds: Sequence[float] = (50, 100), channel_reduction: str = "max"
) -> torch.Tensor:
    """:func:`soft_edge_maps` of one ``(C, *spatial)`` tensor: ``(*spatial)`` uint8 on its device (what
    ``soft_edge_map`` runs for a device tensor)."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch tensor, got {type(image).__name__}.")
    if image.ndim not in (3, 4):
        raise ValueError(f"image must have 3 or 4 dimensions, got shape {tuple(image.shape)}.")
    return soft_edge_maps(image[None], kernel_size, thresholds, channel_reduction)[0]
