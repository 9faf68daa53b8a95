"""Depatching fidelity: Dice of deserialize(serialize(GT)) against GT on the real nuclei2d image.

The upper bound a perfect token prediction can reach. Protocol (the issue's): binarised mask, image
edges with Gaussian kernel 3 and Canny (50, 100), p = 8, L in {256, 1024, 2050}; ours next to the
seed (nearest tokens, ``astype(int)`` then cubic depatching, its own stop rule).

Ours is shown two ways: soft label tokens (class fractions) + linear depatching (the default for
predictions), and hard tokens (nearest) + nearest depatching. Run: ``python benchmarks/fidelity.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_seed, nuclei2d, table  # noqa: E402

from monai_shf.forest import (  # noqa: E402
    build_forest,
    deserialize,
    edge_map,
    serialize,
    to_uint8,  # noqa: E402
)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def main() -> None:
    img, mask = nuclei2d()
    gt = mask > 0
    seed = load_seed()
    p, kernel, thresholds = 8, 3, (50, 100)
    edges = edge_map(img[None], kernel, thresholds)
    rows = []
    for length in (256, 1024, 2050):
        forest = build_forest(edges, length)
        soft = deserialize(
            serialize(gt[None].astype(np.uint8), forest, p, mode="fraction", num_classes=2), forest, mode="linear"
        )
        hard = deserialize(serialize(gt[None].astype(np.uint8), forest, p, mode="nearest"), forest, mode="nearest")
        row = {
            "L": length,
            "ours leaves": forest.num_leaves,
            "ours soft + linear": f"{dice(soft[1] > 0.5, gt):.4f}",
            "ours hard + nearest": f"{dice(hard[0] > 0.5, gt):.4f}",
        }
        if seed is not None:
            # the seed reads an 8-bit RGB image and an (H, W, 1) target (values 0/1); it gets the
            # same 8-bit image our edge map sees (min-max scaled), so both forests see the same edges
            img8 = np.repeat(to_uint8(img)[..., None], 3, axis=-1)
            target = gt.astype(np.uint8)[..., None]
            seq_img, seq_mask, seed_forest = seed.seed_patchify(
                img8, target, fixed_length=length, patch_size=p, kernel=kernel, canny=thresholds
            )
            rebuilt = seed_forest.deserialize(np.asarray(seq_mask, dtype=np.float32)[..., None], p, 1)[..., 0]
            row["seed leaves"] = seed_forest.count_patches()
            row["seed"] = f"{dice(rebuilt > 0.5, gt):.4f}"
        rows.append(row)
    print(table(rows, list(rows[0])))
    print(f"\nnuclei2d {img.shape}, {int(gt.sum())} foreground pixels; p={p}, kernel={kernel}, thresholds={thresholds}")


if __name__ == "__main__":
    main()
