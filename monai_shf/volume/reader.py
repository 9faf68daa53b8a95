"""Lazy multiscale OME-Zarr (NGFF 0.4) volumes: :func:`open_volume` and :class:`Volume`.

A volume is never loaded whole: :func:`open_volume` reads the store's ``multiscales`` metadata and opens
every level as a ``zarr`` (v2 API) array; :meth:`Volume.read` reads one region of one level. No MONAI import.

Store layout read: a group whose ``.zattrs`` hold ``multiscales[0]`` with ``axes`` (three ``"space"`` axes,
optionally one ``"channel"`` axis before them; a ``"time"`` axis of length 1 is dropped), ``datasets``
(level paths, level 0 first) and each dataset's ``coordinateTransformations`` ``scale`` (the voxel size at
that level; level 0's spatial entries are :attr:`Volume.spacing`).

Checked when opening (``ValueError`` naming the store and the field): multiscale metadata present; level
shapes decreasing by powers of two per axis (floor or ceil halving, :attr:`Volume.downsamples`); the
chunk grids of the levels nested (a level-``k`` chunk spans a whole number of level-0 chunks along every
spatial axis, or a level-0 chunk a whole number of level-``k`` chunks); spacing finite and ``> 0``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_shf.validation import check_int

__all__ = ["Volume", "open_volume", "level_factor"]


def level_factor(size0: int, size: int) -> int:
    """The power-of-two factor ``f`` with ``size == size0 // f`` or ``-(-size0 // f)``, else 0."""
    f = 1
    while f <= size0:
        if size in (size0 // f, -(-size0 // f)):
            return f
        f *= 2
    return 0


def _zarr() -> Any:
    try:
        import zarr
    except ImportError as err:  # pragma: no cover - the extra is installed in tests
        raise ImportError("OME-Zarr volumes need zarr: pip install 'monai_shf[zarr]'.") from err
    return zarr


class Volume:
    """A lazy, read-only multiscale 3D image (one OME-Zarr store).

    Coordinates are array-axis order ``(z, y, x)`` (the store's spatial axis order) in voxels of the
    level read; level 0 is the full resolution.

    Attributes:
        path: the store.
        level_shapes: ``((D0, H0, W0), (D1, H1, W1), ...)``, level 0 first.
        downsamples: per level, the power-of-two factor per spatial axis ``(fz, fy, fx)``.
        spacing: level-0 voxel size per spatial axis (the store's units, usually micrometres).
        num_channels: channels (1 when the store has no channel axis).
        dtype: numpy dtype of the voxels.
        axes: the store's NGFF axes (dicts), as written.
        unit: the first space axis's ``unit`` (e.g. ``"micrometer"``, ``"millimeter"``), ``None`` when unnamed.
    """

    def __init__(self, path: str | os.PathLike):
        zarr = _zarr()
        self.path = os.fspath(path)
        try:
            group = zarr.open_group(self.path, mode="r")
        except Exception as err:
            raise ValueError(f"{self.path} is not a readable zarr group (OME-Zarr store): {err}") from err
        attrs = group.attrs.asdict()
        multiscales = attrs.get("multiscales")
        if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], dict):
            raise ValueError(f"{self.path} has no NGFF 'multiscales' metadata in its .zattrs: not an OME-Zarr image.")
        meta = multiscales[0]
        self.axes = meta.get("axes")
        self._channel_axis, self._time_axis, spatial = self._parse_axes(self.axes)
        datasets = meta.get("datasets")
        if not isinstance(datasets, list) or not datasets:
            raise ValueError(f"{self.path}: 'multiscales[0].datasets' is missing or empty.")
        self._arrays, scales = [], []
        for i, ds in enumerate(datasets):
            if not isinstance(ds, dict) or "path" not in ds or ds["path"] not in group:
                raise ValueError(f"{self.path}: 'multiscales[0].datasets[{i}].path' names no array of the store.")
            arr = group[ds["path"]]
            if arr.ndim != len(self.axes):
                raise ValueError(
                    f"{self.path}: dataset {ds['path']!r} has {arr.ndim} dimensions but 'axes' names {len(self.axes)}."
                )
            self._arrays.append(arr)
            scales.append(self._scale(ds, i))
        self._spatial = spatial
        unit = self.axes[spatial[0]].get("unit")
        self.unit = unit if isinstance(unit, str) else None
        self.level_shapes = tuple(tuple(int(a.shape[s]) for s in spatial) for a in self._arrays)
        self.num_channels = 1 if self._channel_axis is None else int(self._arrays[0].shape[self._channel_axis])
        self.dtype = np.dtype(self._arrays[0].dtype)
        self.spacing = tuple(float(scales[0][s]) for s in spatial)
        self.downsamples = self._check_levels()
        self._check_chunks()

    # ------------------------------------------------------------------ metadata checks
    def _parse_axes(self, axes: Any) -> tuple[int | None, int | None, tuple[int, ...]]:
        if not isinstance(axes, list) or not all(isinstance(a, dict) for a in axes):
            raise ValueError(f"{self.path}: 'multiscales[0].axes' must be a list of axis objects (NGFF 0.4).")
        types = [a.get("type") for a in axes]
        spatial = tuple(i for i, t in enumerate(types) if t == "space")
        channel = [i for i, t in enumerate(types) if t == "channel"]
        time = [i for i, t in enumerate(types) if t == "time"]
        if len(spatial) != 3 or len(channel) > 1 or len(time) > 1 or len(axes) != 3 + len(channel) + len(time):
            raise ValueError(
                f"{self.path}: 'multiscales[0].axes' must be three 'space' axes, optionally one 'channel' and one "
                f"'time' axis; got types {types}."
            )
        if channel and channel[0] > spatial[0]:
            raise ValueError(f"{self.path}: 'multiscales[0].axes': the channel axis must come before the space axes.")
        return (channel[0] if channel else None), (time[0] if time else None), spatial

    def _scale(self, ds: dict, i: int) -> list[float]:
        scale = None
        for t in ds.get("coordinateTransformations") or []:
            if isinstance(t, dict) and t.get("type") == "scale":
                scale = t.get("scale")
        field = f"'multiscales[0].datasets[{i}].coordinateTransformations' scale"
        if scale is None:
            raise ValueError(f"{self.path}: {field} is missing (NGFF 0.4 requires one per dataset).")
        if not isinstance(scale, list) or len(scale) != len(self.axes):
            raise ValueError(f"{self.path}: {field} must list one number per axis ({len(self.axes)}), got {scale!r}.")
        try:
            values = [float(v) for v in scale]
        except (TypeError, ValueError):
            raise ValueError(f"{self.path}: {field} must hold numbers, got {scale!r}.") from None
        if not all(math.isfinite(v) and v > 0 for v in values):
            raise ValueError(f"{self.path}: {field} must be finite and > 0 (voxel spacing), got {scale!r}.")
        return values

    def _check_levels(self) -> tuple[tuple[int, int, int], ...]:
        out = []
        for k, shape in enumerate(self.level_shapes):
            factors = tuple(level_factor(s0, s) for s0, s in zip(self.level_shapes[0], shape))
            if 0 in factors or (k and any(f < g for f, g in zip(factors, out[-1]))):
                raise ValueError(
                    f"{self.path}: level {k} ('multiscales[0].datasets[{k}]') has shape {shape}, which is not level "
                    f"0's {self.level_shapes[0]} reduced by a power of two per axis: levels must be powers of two apart."
                )
            out.append(factors)
        if self._time_axis is not None and self._arrays[0].shape[self._time_axis] != 1:
            raise ValueError(f"{self.path}: a 'time' axis must have length 1, got {self._arrays[0].shape}.")
        return tuple(out)

    def _check_chunks(self) -> None:
        c0 = [self._arrays[0].chunks[s] for s in self._spatial]
        for k, arr in enumerate(self._arrays):
            for a, s in enumerate(self._spatial):
                ck = arr.chunks[s] * self.downsamples[k][a]
                if ck % c0[a] and c0[a] % ck:
                    raise ValueError(
                        f"{self.path}: the chunks of level {k} ({tuple(arr.chunks)}) do not tile with level 0's "
                        f"({tuple(self._arrays[0].chunks)}): along every space axis a chunk of one level must "
                        "span a whole number of the other's (in level-0 voxels)."
                    )

    # ------------------------------------------------------------------ geometry
    @property
    def shape(self) -> tuple[int, int, int]:
        """``(D, H, W)`` of level 0."""
        return self.level_shapes[0]

    @property
    def level_count(self) -> int:
        return len(self.level_shapes)

    def chunk_shape(self, level: int) -> tuple[int, int, int]:
        """Spatial chunk shape of one level."""
        arr = self._arrays[self.check_level(level)]
        return tuple(int(arr.chunks[s]) for s in self._spatial)

    def check_level(self, level: Any, name: str = "level") -> int:
        """``level`` as an int in ``[0, level_count)``, or a ``ValueError`` naming the store."""
        level = check_int(level, name)
        if not 0 <= level < self.level_count:
            raise ValueError(
                f"{name}={level} is out of range for {self.path}: the volume has {self.level_count} level(s) "
                f"of shapes {list(self.level_shapes)}."
            )
        return level

    # ------------------------------------------------------------------ reading
    def read(self, level: int, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
        """Read a region of one level.

        Args:
            level: pyramid level.
            start: ``(z, y, x)`` first voxel, in that level's voxels.
            size: ``(d, h, w)`` extent (``>= 1``), inside the level.

        Returns:
            ``(C, d, h, w)`` numpy array in :attr:`dtype`.
        """
        level = self.check_level(level)
        start = tuple(check_int(v, "start", 0) for v in start)
        size = tuple(check_int(v, "size", 1) for v in size)
        shape = self.level_shapes[level]
        if len(start) != 3 or len(size) != 3 or any(a + b > s for a, b, s in zip(start, size, shape)):
            raise ValueError(
                f"region start={start} size={size} is outside level {level} of {self.path}, shaped {shape}."
            )
        return self._read_region(level, start, size)

    def _read_region(self, level: int, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
        arr = self._arrays[level]
        key: list[Any] = [slice(None)] * arr.ndim
        for s, a, b in zip(self._spatial, start, size):
            key[s] = slice(int(a), int(a) + int(b))
        if self._time_axis is not None:
            key[self._time_axis] = 0
        region = np.asarray(arr[tuple(key)])
        return region if self._channel_axis is not None else region[None]

    def close(self) -> None:
        """Nothing to release (zarr reads files per call); kept for the ``Slide``-like interface."""

    def __enter__(self) -> Volume:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Volume({self.path!r}, shape={self.shape}, levels={self.level_count}, channels={self.num_channels}, "
            f"dtype={self.dtype}, spacing={self.spacing})"
        )


def open_volume(path: str | os.PathLike | Volume) -> Volume:
    """Open a multiscale OME-Zarr store lazily (a :class:`Volume` is returned as it is).

    Raises:
        ValueError: not a zarr group, no ``multiscales`` metadata, bad axes, levels not powers of two apart,
            chunks that do not tile, spacing ``<= 0`` or NaN (the message names the store and the field).
    """
    if isinstance(path, Volume):
        return path
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be an OME-Zarr store path, got {type(path).__name__}.")
    if not Path(path).exists():
        raise FileNotFoundError(f"no OME-Zarr store at {os.fspath(path)}.")
    return Volume(path)
