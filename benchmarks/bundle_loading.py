"""Peak memory of the 2D bundle's load + patch, in bytes per pixel, before and after loading images in their own dtype.

Before: ``LoadImaged`` as float32, ``ScaleIntensityRanged`` to [0, 1] on the full image, then
``HierarchicalPatchd`` (edges of a min-max rescaled float copy). After (the bundle's configs now):
``LoadImaged(dtype=None, reader=TiffReader)`` keeps the file's uint8, ``HierarchicalPatchd`` patches
the 8-bit image, ``ScaleIntensityRanged`` scales the ``(3, L, p, p)`` tokens only.

The image is the embedded generator's RGB tissue (uint8, written as PNG and as TIFF). Each row runs
in a fresh process (no allocator reuse between rows); the peak counts what the step holds at its
peak above the process before it (the step's result included), divided by the image's pixels.
Run: ``python benchmarks/bundle_loading.py [--size 4096] [--length 8281]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_extra_bytes, table  # noqa: E402

PIPELINES = ("before", "after")


def _transforms(pipeline: str, length: int, with_patch: bool):
    from monai.transforms import Compose, LoadImaged, ScaleIntensityRanged

    from monai_shf.transforms import HierarchicalPatchd

    scale = ScaleIntensityRanged("image", a_min=0, a_max=255, b_min=0.0, b_max=1.0, clip=True)
    patch = HierarchicalPatchd("image", length=length, patch_size=8, min_size=2, kernel_size=3, thresholds=(50, 100))
    if pipeline == "before":
        load = LoadImaged("image", image_only=True, ensure_channel_first=True)
        return Compose([load, scale, patch] if with_patch else [load, scale])
    load = LoadImaged(
        "image", image_only=True, ensure_channel_first=True, dtype=None, reader="monai_shf.data.TiffReader"
    )
    return Compose([load, patch, scale] if with_patch else [load])


def _child(pipeline: str, path: str, length: int, with_patch: bool) -> None:
    """Runs in a fresh process: prints peak bytes and seconds."""
    pipe = _transforms(pipeline, length, with_patch)
    small = str(Path(path).with_name("small" + Path(path).suffix))
    pipe({"image": small})  # imports and lazy initialisations, on a small image (the heap stays small)
    start = time.perf_counter()
    peak = peak_extra_bytes(lambda: pipe({"image": path}))
    print(peak, time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--length", type=int, default=8281)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        pipeline, path, length, with_patch = args.child
        _child(pipeline, path, int(length), with_patch == "1")
        return

    import tifffile
    from PIL import Image

    from monai_shf.data import synthetic_tissue_2d

    image, _ = synthetic_tissue_2d(args.size, seed=0)
    pixels = args.size * args.size
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = {"png": str(Path(tmp) / "image.png"), "tif": str(Path(tmp) / "image.tif")}
        Image.fromarray(np.moveaxis(image, 0, -1)).save(files["png"])
        tifffile.imwrite(files["tif"], np.moveaxis(image, 0, -1))
        small = np.ascontiguousarray(np.moveaxis(image[:, :256, :256], 0, -1))
        Image.fromarray(small).save(Path(tmp) / "small.png")
        tifffile.imwrite(Path(tmp) / "small.tif", small)
        del image
        for pipeline, fmt in (("before", "png"), ("after", "png"), ("after", "tif")):
            for with_patch in (False, True):
                cmd = [
                    sys.executable,
                    __file__,
                    "--child",
                    pipeline,
                    files[fmt],
                    str(args.length),
                    str(int(with_patch)),
                ]
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                peak, seconds = done.stdout.split()[-2:]
                step = "load + patch + scale" if with_patch else "load (+ scale before)"
                rows.append(
                    {
                        "pipeline": pipeline,
                        "file": fmt,
                        "step": step if pipeline == "before" or with_patch else "load",
                        "peak MB": f"{int(peak) / 2**20:.0f}",
                        "B/px": f"{int(peak) / pixels:.1f}",
                        "s": f"{float(seconds):.2f}",
                    }
                )
    print(f"RGB uint8 {args.size}x{args.size}, L = {args.length}, p = 8 (indicative: shared, noisy machine)\n")
    print(table(rows, ["pipeline", "file", "step", "peak MB", "B/px", "s"]))


if __name__ == "__main__":
    main()
