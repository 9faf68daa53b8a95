"""Band-wise edges against whole-image OpenCV: differing pixels and time, on real images.

For each image and edge parameter set: the whole-image ``cv.Canny(cv.GaussianBlur(...))`` (the
reference; it needs the channel-last copy of the whole image), ``edge_map`` (``canny_bands`` with its
default bands, 512 rows at 8192^2), ``canny_bands`` with thin 64-row bands, and, for comparison, what
bands with a halo alone would give (each band's ``cv.Canny`` on ``kernel_size // 2 + 2 + 16`` extra
rows, no joining of hysteresis chains across bands): the pixels where each differs from the reference.

Images (real data from ``shared/data``): ihc2d tiled 4 x 4 and resized (bilinear) to the side
(texture-rich tissue), ihc2d and nuclei2d upscaled with nearest (one-pixel edges, as a scan), and
nuclei2d as is. Times are the best of ``--repeat`` runs on a shared machine: indicative only.

    python benchmarks/edges.py [--side 8192] [--repeat 2]
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import cv2 as cv
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_time, ihc2d_rgb, ihc2d_tiled, nuclei2d, table  # noqa: E402

from monai_shf.forest import canny_bands, edge_map, to_uint8  # noqa: E402

HALO_EXTRA = 16


def _whole(hwc: np.ndarray, k: int, low: float, high: float) -> np.ndarray:
    return cv.Canny(cv.GaussianBlur(hwc, (k, k), 0) if k > 1 else hwc, low, high) > 0


def _halo_only(hwc: np.ndarray, k: int, low: float, high: float, band: int) -> np.ndarray:
    """Bands with a halo and no cross-band hysteresis: the naive band-wise Canny."""
    h = hwc.shape[0]
    halo = k // 2 + 2 + HALO_EXTRA
    out = np.empty(hwc.shape[:2], dtype=bool)
    for start in range(0, h, band):
        stop = min(h, start + band)
        top, bottom = max(0, start - halo), min(h, stop + halo)
        out[start:stop] = _whole(hwc[top:bottom], k, low, high)[start - top : stop - top]
    return out


def _rows(chw: np.ndarray, start: int, stop: int) -> np.ndarray:
    return chw[:, start:stop]


def _images(side: int) -> dict[str, np.ndarray]:
    ihc = ihc2d_rgb()
    nuclei = to_uint8(nuclei2d()[0])
    return {
        f"ihc2d tiled 4x4, bilinear {side}^2 (RGB)": ihc2d_tiled(side),
        f"ihc2d nearest {side}^2 (RGB)": cv.resize(ihc, (side, side), interpolation=cv.INTER_NEAREST),
        f"nuclei2d nearest {side}^2 (grey)": cv.resize(nuclei, (side, side), interpolation=cv.INTER_NEAREST),
        "nuclei2d 512^2 (grey)": nuclei,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=8192)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for name, hwc in _images(args.side).items():
        chw = np.ascontiguousarray(np.moveaxis(hwc, -1, 0) if hwc.ndim == 3 else hwc[None])
        for k, (low, high) in [(3, (50, 100)), (7, (10, 30))]:
            thresholds = (low, high)
            reference = _whole(hwc, k, low, high)
            bands = edge_map(chw, k, thresholds)
            thin = canny_bands(partial(_rows, chw), hwc.shape[:2], k, thresholds, band_rows=64)
            naive = _halo_only(hwc, k, low, high, 64)
            row = {
                "image": name,
                "k, thresholds": f"{k}, ({low}, {high})",
                "edge px": f"{int(reference.sum())}",
                "edge_map differ": f"{np.count_nonzero(bands != reference)}",
                "64-row bands differ": f"{np.count_nonzero(thin != reference)}",
                "halo only (64 rows) differ": f"{np.count_nonzero(naive != reference)}",
                "whole cv.Canny ms": f"{1e3 * best_time(partial(_whole, hwc, k, low, high), args.repeat):.0f}",
                "edge_map ms": f"{1e3 * best_time(partial(edge_map, chw, k, thresholds), args.repeat):.0f}",
            }
            print(row, flush=True)
            rows.append(row)
    print(table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
