"""``monai-shf`` command line.

``monai-shf demo``: patch a real image (``shared/data/nuclei2d`` when present, else a generated
tissue image), print leaves, compression and the depatching Dice of a perfect prediction, and write
a forest-overlay figure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "find_nuclei2d", "patching_demo"]


def find_nuclei2d() -> Path | None:
    """The nuclei2d folder: ``$MONAI_SHF_DATA/nuclei2d``, else ``shared/data/nuclei2d`` beside the
    repository or the current directory."""
    candidates = []
    if os.environ.get("MONAI_SHF_DATA"):
        candidates.append(Path(os.environ["MONAI_SHF_DATA"]) / "nuclei2d")
    repo = Path(__file__).resolve().parents[1]
    candidates += [repo.parent / "shared" / "data" / "nuclei2d", Path.cwd().parent / "shared" / "data" / "nuclei2d"]
    for c in candidates:
        if (c / "img2d.tif").exists() and (c / "mask2d.tif").exists():
            return c
    return None


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2.0 * (a & b).sum() / max(int(a.sum() + b.sum()), 1))


def patching_demo(output_dir: Path, length: int, patch_size: int, kernel_size: int, thresholds: tuple[float, float]) -> dict:
    from monai_shf.data import synthetic_tissue_2d
    from monai_shf.forest import build_forest, deserialize, edge_map, serialize
    from monai_shf.visualize import forest_overlay, panels, save_png, to_rgb

    folder = find_nuclei2d()
    if folder is not None:
        import tifffile

        image = tifffile.imread(folder / "img2d.tif")[None]
        label = (tifffile.imread(folder / "mask2d.tif") > 0).astype(np.uint8)[None]
        source = f"real: {folder} (2018 DSB nuclei, {image.shape[1]}x{image.shape[2]})"
    else:
        image, label = synthetic_tissue_2d(1024, seed=0)
        label = (label > 0).astype(np.uint8)
        source = "generated tissue image 1024x1024 (shared/data not found)"
    t0 = time.perf_counter()
    edges = edge_map(image, kernel_size=kernel_size, thresholds=thresholds)
    t1 = time.perf_counter()
    forest = build_forest(edges, length)
    t2 = time.perf_counter()
    tokens = serialize(image, forest, patch_size)
    soft = serialize(label, forest, patch_size, mode="fraction", num_classes=2)
    t3 = time.perf_counter()
    probs = deserialize(soft, forest, mode="linear")
    t4 = time.perf_counter()
    hard = deserialize(serialize(label, forest, patch_size, mode="nearest"), forest, mode="nearest")
    gt = label[0] > 0
    result = {
        "source": source,
        "leaves": forest.num_leaves,
        "length": forest.length,
        "padding": forest.num_padding,
        "leaf_sides": f"{int(forest.sizes.min())}..{int(forest.sizes.max())}",
        "compression": float(np.prod(forest.spatial_shape)) / (forest.num_leaves * patch_size ** forest.spatial_dims),
        "dice_soft_linear": _dice(probs[1] > 0.5, gt),
        "dice_hard_nearest": _dice(hard[0] > 0.5, gt),
        "ms_edges": 1e3 * (t1 - t0),
        "ms_build": 1e3 * (t2 - t1),
        "ms_serialize": 1e3 * (t3 - t2),
        "ms_deserialize": 1e3 * (t4 - t3),
        "token_shape": tuple(tokens.shape),
    }
    figure = panels(
        [to_rgb(image), forest_overlay(image, forest), to_rgb(probs[1:2]), to_rgb(label.astype(np.float32))],
        ["input", f"forest: {forest.num_leaves} leaves", "depatched (perfect tokens)", "ground truth"],
    )
    result["figure"] = str(save_png(output_dir / "forest_overlay.png", figure))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="monai-shf", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="patch a real image and report depatching fidelity")
    demo.add_argument("--output-dir", type=Path, default=Path("outputs/demo"))
    demo.add_argument("--length", type=int, default=1024)
    demo.add_argument("--patch-size", type=int, default=8)
    demo.add_argument("--kernel-size", type=int, default=3)
    demo.add_argument("--thresholds", type=float, nargs=2, default=(50.0, 100.0))
    args = parser.parse_args(argv)
    if args.command == "demo":
        r = patching_demo(args.output_dir, args.length, args.patch_size, args.kernel_size, tuple(args.thresholds))
        print(f"data        {r['source']}")
        print(f"tokens      {r['token_shape']}  (L={r['length']}, {r['leaves']} leaves, {r['padding']} padding, leaf sides {r['leaf_sides']} px)")
        print(f"compression {r['compression']:.2f} image pixels per token pixel")
        print(f"timing      edges {r['ms_edges']:.1f} ms, build {r['ms_build']:.1f} ms, serialize {r['ms_serialize']:.1f} ms, deserialize {r['ms_deserialize']:.1f} ms")
        print(f"depatch Dice of a perfect prediction: {r['dice_soft_linear']:.4f} (soft tokens, linear), {r['dice_hard_nearest']:.4f} (hard tokens, nearest)")
        print(f"figure      {r['figure']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
