"""Small OME-Zarr test stores: exact 2x mean pyramids (as serialize's own pyramid) of a textured volume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from monai_shf.volume import write_multiscale


def blob_volume(n: int = 64, seed: int = 0) -> np.ndarray:
    """``(n, n, n)`` float32: two boxes of different intensity plus mild noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 2, (n, n, n)).astype(np.float32)
    x[n // 8 : n // 2, n // 4 : 3 * n // 4, n // 8 : n // 2] += 100
    x[n // 2 : 7 * n // 8, n // 8 : n // 2, n // 2 : 7 * n // 8] += 50
    return x


def exact_pyramid(x: np.ndarray, levels: int) -> list[np.ndarray]:
    out = [torch.from_numpy(x)[None]]
    for _ in range(levels - 1):
        out.append(F.avg_pool3d(out[-1][None], 2)[0])
    return [t[0].numpy() for t in out]


def write_store(path: Path, x: np.ndarray, levels: int = 4, chunk: int = 16, **kwargs) -> Path:
    """Write ``x`` (``(D, H, W)``) as an OME-Zarr store whose levels are exact float 2x means
    (``avg_pool3d``), or, for integer ``x``, the writer's own pyramid."""
    path = write_multiscale(
        path,
        x.shape,
        lambda s, z: x[s[0] : s[0] + z[0], s[1] : s[1] + z[1], s[2] : s[2] + z[2]],
        x.dtype,
        chunk=chunk,
        levels=levels,
        downsample="nearest" if x.dtype.kind in "biu" else "mean",
        **kwargs,
    )
    if x.dtype.kind == "f":
        import zarr

        group = zarr.open_group(str(path), mode="r+")
        for k, level in enumerate(exact_pyramid(x, levels)):
            group[str(k)][:] = level
    return path
