"""A :class:`~monai_shf.slide.Slide` over MONAI's ``WSIReader`` (OpenSlide or cuCIM backend).

For the formats tifffile does not read (MRXS, NDPI, DICOM WSI, ...). This is the only module of
``monai_shf.slide`` that imports MONAI, and only when such a slide is opened. Those libraries decode
and cache tiles themselves: :attr:`Slide.level_decodes` counts regions read, not tiles. OpenSlide
always returns RGB(A) pixels; this backend returns 3-channel uint8 RGB.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import numpy as np

from .base import Slide

__all__ = ["WSIReaderSlide", "available_backends"]

_MODULES = {"openslide": "openslide", "cucim": "cucim"}


def available_backends() -> list[str]:
    """The ``WSIReader`` backends whose library is installed, OpenSlide first."""
    return [name for name, module in _MODULES.items() if importlib.util.find_spec(module) is not None]


class WSIReaderSlide(Slide):
    """A slide read through ``monai.data.WSIReader(backend=...)``.

    Args:
        path: any file the backend library reads.
        backend: ``"openslide"`` or ``"cucim"``.

    Picklable by path (reopened in DataLoader workers).
    """

    def __init__(self, path: str | os.PathLike, backend: str = "openslide"):
        self.path = os.fspath(path)
        self.backend = backend
        self._decodes = []
        self._wsi = None
        if backend not in _MODULES:
            raise ValueError(f"backend must be one of {tuple(_MODULES)}, got {backend!r}.")
        if importlib.util.find_spec(_MODULES[backend]) is None:
            raise ValueError(
                f"cannot open {self.path} with backend={backend!r}: the {backend} library is not installed "
                f"(pip install 'monai_shf[wsi]')."
            )
        from monai.data import WSIReader  # lazily: the slide core never imports MONAI

        self._reader = WSIReader(backend=backend, level=0)
        try:
            self._wsi = self._reader.read(self.path)
            count = int(self._reader.get_level_count(self._wsi))
            self.level_shapes = tuple(tuple(int(s) for s in self._reader.get_size(self._wsi, k)) for k in range(count))
            self._decodes = [0] * count
        except Exception as e:  # the libraries raise their own error types on unreadable files
            self.close()
            raise ValueError(f"{self.path} cannot be read by {backend} ({type(e).__name__}: {e}).") from None
        self.num_channels = 3
        self.dtype = np.dtype(np.uint8)
        try:
            mpp = tuple(float(v) for v in self._reader.get_mpp(self._wsi, 0))
            self.mpp = mpp if len(mpp) == 2 and all(np.isfinite(v) and v > 0 for v in mpp) else None
        except Exception:  # no resolution in the file
            self.mpp = None

    def _read_region(self, level: int, start: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        # WSIReader locates regions in level-0 pixels
        sy, sx = self.level_scales[level]
        location = (int(round(start[0] * sy)), int(round(start[1] * sx)))
        try:
            data, _ = self._reader.get_data(self._wsi, location=location, size=size, level=level, mode="RGB")
        except Exception as e:
            raise ValueError(f"{self.path}: reading level {level} at {start} size {size} failed ({e}).") from None
        self._decodes[level] += 1
        data = np.asarray(data)
        if data.shape[0] != 3:  # channel_dim defaults to 0; tolerate channel-last libraries
            data = np.moveaxis(data, -1, 0)
        return np.ascontiguousarray(data[:3], dtype=np.uint8)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "backend": self.backend}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["backend"])

    def close(self) -> None:
        wsi = getattr(self, "_wsi", None)
        if wsi is not None:
            self._wsi = None
            closer = getattr(wsi, "close", None)
            if closer is not None:
                closer()
