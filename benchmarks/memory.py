"""Peak extra memory of each patching step, in bytes per pixel, at 4096^2 and 8192^2.

Every step runs in a fresh Python process (so one step's freed-but-cached memory cannot hide the
next one's peak), once at 256^2 to load libraries and thread pools, then on inputs built before the
measurement, with glibc's mmap threshold fixed at 128 KiB; the number is the kernel's resident-set
high-water mark above the level just before the step (``/proc/self/clear_refs``), divided by the
image's pixel count ``H * W``. The step's result is included (an edge map is 1 B/px by itself).

Inputs: real tissue (``shared/data/ihc2d``, tiled 4 x 4 and resized to the side: texture-rich, as a
pathology tile), as uint8 RGB ``(3, H, W)``; its grey level x 200 as uint16 ``(1, H, W)``; a 3-class
uint8 label (grey-level terciles); the forest of Gaussian 3 + Canny (50, 100) edges with
L = 8281 (4096^2) / 10201 (8192^2), p = 8; random ``(2, L, p, p)`` float32 scores.

``deserialize argmax`` needs ``deserialize(..., argmax=True)`` and prints ``n/a`` where the package
under test does not have it. ``load + patch (2D bundle)`` runs the 2D bundle's own inference
preprocessing (``configs/inference.yaml``: ``LoadImaged`` ... ``HierarchicalPatchd``) on a PNG of the
image. The script copes with older versions of the package: run it against one by putting that
checkout first on ``PYTHONPATH``:

    python benchmarks/memory.py                         # the package that `import monai_shf` finds
    PYTHONPATH=/path/to/old/checkout python benchmarks/memory.py
    python benchmarks/memory.py --sides 4096 --steps edge_map_rgb build_forest
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ihc2d_tiled, peak_extra_bytes, table  # noqa: E402

LENGTHS = {256: 256, 1024: 1024, 4096: 8281, 8192: 10201}
PATCH = 8
CACHE = Path(os.environ.get("TMPDIR", "/tmp")) / "monai_shf_memory_benchmark"

# glibc returns every block of 128 KiB or more to the kernel when freed (its default threshold grows to
# 32 MiB after the first large free): a step then cannot reuse memory the warm-up freed, and RSS is its peak.
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}

STEPS = {
    "edge_map_rgb": "edge_map (uint8 RGB)",
    "edge_map_grey16": "edge_map (uint16 grey)",
    "soft_edge_map_rgb": "soft_edge_map (uint8 RGB)",
    "soft_edge_map_grey16": "soft_edge_map (uint16 grey)",
    "build_forest": "build_forest (bool edges)",
    "serialize_rgb": "serialize (uint8 RGB, area)",
    "serialize_fraction": "serialize (uint8 label, fraction, K=3)",
    "serialize_nearest": "serialize (uint8 label, nearest)",
    "deserialize_linear": "deserialize (2 x float32, linear)",
    "deserialize_argmax": "deserialize (2 x float32, argmax=True)",
    "bundle_load_patch": "load + patch (2D bundle preprocessing, PNG)",
}


def _tissue(side: int) -> np.ndarray:
    """``(3, side, side)`` uint8 RGB real tissue, tiled 4 x 4 and resized (bilinear)."""
    return np.ascontiguousarray(np.moveaxis(ihc2d_tiled(side), -1, 0))


def _grey(image: np.ndarray) -> np.ndarray:
    return np.add.reduce(image, axis=0, dtype=np.uint16) // 3


def _label(image: np.ndarray) -> np.ndarray:
    grey = _grey(image)
    cuts = np.quantile(grey[::16, ::16], [1 / 3, 2 / 3])
    return np.digitize(grey, cuts).astype(np.uint8)[None]


def _forest(image: np.ndarray, side: int):
    from monai_shf.forest import build_forest, edge_map

    return build_forest(edge_map(image, 3, (50, 100)), LENGTHS.get(side, 1024))


def _bundle_preprocessing(side: int):
    from monai.bundle import ConfigParser

    from monai_shf.bundles import bundle_path

    parser = ConfigParser()
    parser.read_config(str(bundle_path("shf_2d_segmentation") / "configs" / "inference.yaml"))
    parser["forest#length"] = LENGTHS.get(side, 1024)
    return parser.get_parsed_content("preprocessing")


def _png(image: np.ndarray, side: int) -> Path:
    import cv2 as cv

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"tissue_{side}.png"
    if not path.exists():
        tmp = path.with_suffix(".tmp.png")
        cv.imwrite(str(tmp), cv.cvtColor(np.moveaxis(image, 0, -1), cv.COLOR_RGB2BGR), [cv.IMWRITE_PNG_COMPRESSION, 1])
        tmp.replace(path)
    return path


def measure(step: str, side: int) -> float | None:
    """Peak extra bytes per pixel of ``step`` at ``side``^2; None where the step does not exist.

    The step first runs once at 256^2 so that libraries, thread pools and caches loaded on first use
    are not counted."""
    warm_up = _prepare(step, 256)
    if warm_up is None:
        return None
    warm_up()
    del warm_up
    fn = _prepare(step, side)
    extra = peak_extra_bytes(fn)
    return None if extra is None else extra / float(side * side)


def _prepare(step: str, side: int) -> Callable[[], Any] | None:
    """The step at ``side``^2 as a no-argument callable, inputs built; None where it does not exist."""
    from monai_shf.forest import build_forest, deserialize, edge_map, serialize

    image = _tissue(side)
    if step == "edge_map_rgb":
        fn = lambda: edge_map(image, 3, (50, 100))  # noqa: E731
    elif step == "edge_map_grey16":
        grey = _grey(image)[None] * np.uint16(200)
        del image
        fn = lambda: edge_map(grey, 3, (50, 100))  # noqa: E731
    elif step in ("soft_edge_map_rgb", "soft_edge_map_grey16"):
        try:
            from monai_shf.forest import soft_edge_map
        except ImportError:
            return None  # this version has no soft edges
        if step == "soft_edge_map_grey16":
            image = _grey(image)[None] * np.uint16(200)
        fn = lambda: soft_edge_map(image, 3, (50, 100))  # noqa: E731
    elif step == "build_forest":
        edges = edge_map(image, 3, (50, 100))
        del image
        fn = lambda: build_forest(edges, LENGTHS.get(side, 1024))  # noqa: E731
    elif step == "serialize_rgb":
        forest = _forest(image, side)
        fn = lambda: serialize(image, forest, PATCH)  # noqa: E731
    elif step in ("serialize_fraction", "serialize_nearest"):
        forest, label = _forest(image, side), _label(image)
        del image
        if step == "serialize_fraction":
            fn = lambda: serialize(label, forest, PATCH, mode="fraction", num_classes=3)  # noqa: E731
        else:
            fn = lambda: serialize(label, forest, PATCH, mode="nearest")  # noqa: E731
    elif step in ("deserialize_linear", "deserialize_argmax"):
        forest = _forest(image, side)
        del image
        scores = np.random.default_rng(0).random((2, forest.num_leaves, PATCH, PATCH), dtype=np.float32)
        if step == "deserialize_linear":
            fn = lambda: deserialize(scores, forest, "linear")  # noqa: E731
        else:
            tiny = build_forest(np.zeros((16, 16), dtype=bool), 4)
            try:
                deserialize(np.zeros((2, 4, PATCH, PATCH), np.float32), tiny, "linear", argmax=True)
            except TypeError:
                return None  # this version has no argmax=True
            fn = lambda: deserialize(scores, forest, "linear", argmax=True)  # noqa: E731
    elif step == "bundle_load_patch":
        path = _png(image, side)
        del image
        preprocessing = _bundle_preprocessing(side)
        fn = lambda: preprocessing({"image": str(path)})  # noqa: E731
    else:
        raise ValueError(f"step must be one of {tuple(STEPS)}, got {step!r}.")
    return fn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", type=int, nargs="+", default=[4096, 8192])
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS))
    parser.add_argument("--one", nargs=2, metavar=("STEP", "SIDE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # child process: one measurement, printed as JSON on the last line
        print(json.dumps(measure(args.one[0], int(args.one[1]))))
        return
    import monai_shf

    print(f"monai_shf from {Path(monai_shf.__file__).resolve().parent}", flush=True)
    rows = []
    for step in args.steps:
        row = {"step": STEPS[step]}
        for side in args.sides:
            child = subprocess.run(
                [sys.executable, __file__, "--one", step, str(side)],
                capture_output=True,
                text=True,
                check=False,
                env=os.environ | CHILD_ENV,
            )
            if child.returncode != 0:
                row[f"{side}^2 B/px"] = "error"
                print(f"{step} at {side}^2 failed:\n{child.stderr[-2000:]}", file=sys.stderr, flush=True)
                continue
            value = json.loads(child.stdout.strip().splitlines()[-1])
            row[f"{side}^2 B/px"] = "n/a" if value is None else f"{value:.2f}"
        print(row, flush=True)
        rows.append(row)
    print(table(rows, ["step"] + [f"{side}^2 B/px" for side in args.sides]))


if __name__ == "__main__":
    main()
