"""Which score maps and images take the torch path (``torch_edges`` / ``torch_forest``) instead of numpy/OpenCV."""

from __future__ import annotations

from typing import Any

__all__ = ["on_accelerator"]


def on_accelerator(x: Any) -> bool:
    """True for a tensor on a device other than the CPU (CUDA, ...), not a data-less 'meta' tensor.

    Such inputs are computed on their device by torch ops; CPU tensors and arrays keep the numpy path
    (OpenCV's filters and the numpy build are faster on CPU)."""
    device = getattr(x, "device", None)
    return hasattr(x, "detach") and getattr(device, "type", "cpu") not in ("cpu", "meta")
