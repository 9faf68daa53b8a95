"""Depatching fidelity of the split criteria on every real image: paper (edges) / uniform / default (error).

The upper bound a perfect token prediction can reach: mean foreground Dice of
``argmax(deserialize(serialize(GT, mode="fraction"), mode="linear"))`` against GT (soft class-fraction
label tokens, linear depatching). Forests, all with exactly ``L`` tokens:

* **paper**: binary Canny edges (Gaussian 3 + Canny (50, 100); ITK's N-D Canny in 3D) and
  ``criterion="edges"``, the paper's edge count (split the leaf with the most edge pixels);
* **uniform**: the same build on an all-zero score, i.e. a uniform quadtree/octree;
* **default**: soft edges (``soft_edge_map``: Gaussian 3, gradient relative to ``50 / 8`` grey levels
  per pixel, capped at one edge pixel) and ``criterion="error"`` with the token side as
  ``patch_size``: what the transforms and bundles do;
* **Canny + error**: the previous default, binary Canny edges with ``criterion="error"``;
* **Canny + error, prior 1**: the same with ``area_prior=1`` (a hedge for edge maps that miss boundaries).

Images (``shared/data``):

* ``nuclei2d``: 512^2 fluorescence, label = instance mask > 0; p = 8.
* ``ihc2d``: 512^2 RGB IHC tissue; label of our own making: DAB-positive tissue, the DAB optical
  density of a Ruifrok-Johnston colour deconvolution (haematoxylin / eosin / DAB vectors of
  scikit-image's ``rgb2hed``), Gaussian sigma 1 px, Otsu threshold; p = 8.
* ``ihc2d x8 (4096^2)``: the texture-rich large case: the RGB image and the DAB density mirror-tiled
  2 x 2 then upsampled 4x (bilinear), the label thresholded after upsampling (smooth boundaries); p = 8.
* ``mni152`` 3D: T1 197 x 233 x 189, label 0 / 1 GM / 2 WM from the probability maps > 127 (WM
  wins where both are); p = 4; Dice = mean of GM and WM.

The seed (``shared/reference/seed_shf.py``: nearest tokens, ``astype(int)``, cubic depatching, its
own stop rule) is shown where it runs: square power-of-two 2D images up to 512^2. Also printed: how
many of the label's boundary pixels lie within 2 pixels of an edge pixel (the edge map's recall),
which decides whether edges can beat a uniform grid at all.

Anisotropic voxels (``--anisotropic``): MNI152 resampled to thick slices, 1 x 1 x 5 mm (CT-like: slabs of
5 axial slices averaged) and 0.5 x 0.5 x 3 mm (in-plane linear upsampling, slabs of 3 averaged); T1 and
the GM/WM probability maps resampled alike, the label thresholded on the new grid. At equal L, the
upper bound of the default forest built with the volume's spacing (``build_forest(..., spacing=)``:
leaves near-cubic in millimetres) against the voxel-cube forest of the same score map (and both
uniform). Also the median leaf aspect (longest / shortest side, in millimetres).

Run: ``python benchmarks/fidelity.py`` (``--quick``: the 512^2 images only, fewer L;
``--anisotropic``: the thick-slice MNI152 rows only).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2 as cv
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ihc2d_rgb, load_seed, mni152_tissue, nuclei2d, table  # noqa: E402

from monai_shf.forest import build_forest, deserialize, edge_map, serialize, soft_edge_map, to_uint8  # noqa: E402
from monai_shf.utils import find_real_data  # noqa: E402

KERNEL, THRESHOLDS, TOLERANCE = 3, (50, 100), 0.002
# stain vectors (rows: haematoxylin, eosin, DAB) of scikit-image's rgb2hed (Ruifrok & Johnston 2001)
HED_FROM_RGB = np.linalg.inv(
    np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
    / np.linalg.norm([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], axis=1, keepdims=True)
)


def dab_density(rgb: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32 DAB optical density of an ``(H, W, 3)`` uint8 RGB image (colour deconvolution)."""
    od = -np.log(np.maximum(rgb.astype(np.float32), 1.0) / 255.0)
    return (od.reshape(-1, 3) @ HED_FROM_RGB.astype(np.float32))[:, 2].reshape(rgb.shape[:2])


def otsu(density: np.ndarray) -> np.ndarray:
    """uint8 label: 1 where ``density`` is above its Otsu threshold (on the min-max scaled 8-bit image)."""
    scaled = to_uint8(density)
    threshold, _ = cv.threshold(scaled, 0, 255, cv.THRESH_BINARY + cv.THRESH_OTSU)
    return (scaled > threshold).astype(np.uint8)


def ihc2d(tiles: int = 1, upsample: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(3, H, W)`` uint8 RGB and its ``(H, W)`` DAB-positive label; optionally mirror-tiled and upsampled."""
    rgb = ihc2d_rgb()
    density = cv.GaussianBlur(dab_density(rgb), (0, 0), 1.0)
    if tiles > 1:
        pad = ((0, rgb.shape[0] * (tiles - 1)), (0, rgb.shape[1] * (tiles - 1)))
        rgb, density = np.pad(rgb, pad + ((0, 0),), mode="symmetric"), np.pad(density, pad, mode="symmetric")
    if upsample > 1:
        size = (rgb.shape[1] * upsample, rgb.shape[0] * upsample)
        rgb = cv.resize(rgb, size, interpolation=cv.INTER_LINEAR)
        density = cv.resize(density, size, interpolation=cv.INTER_LINEAR)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)), otsu(density)


def upper_bound(label: np.ndarray, forest, patch_size: int, num_classes: int) -> float:
    """Mean foreground Dice of the depatched soft label tokens (argmax) against ``label``."""
    tokens = serialize(label[None], forest, patch_size, mode="fraction", num_classes=num_classes)
    rebuilt = deserialize(tokens, forest, mode="linear").argmax(axis=0)
    dices = []
    for c in range(1, num_classes):
        a, b = rebuilt == c, label == c
        dices.append(2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1))
    return float(np.mean(dices))


def edge_recall(edges: np.ndarray, label: np.ndarray, radius: int = 2) -> float:
    """Fraction of the label's boundary pixels within ``radius`` pixels (max norm) of an edge pixel."""
    boundary = np.zeros(label.shape, dtype=bool)
    for axis in range(label.ndim):
        step = np.diff(label, axis=axis) != 0
        boundary[(slice(None),) * axis + (slice(0, -1),)] |= step
    pool = torch.nn.functional.max_pool2d if label.ndim == 2 else torch.nn.functional.max_pool3d
    near = pool(torch.from_numpy(edges.astype(np.float32))[None, None], 2 * radius + 1, 1, radius)[0, 0].numpy() > 0
    return float(np.count_nonzero(boundary & near) / max(np.count_nonzero(boundary), 1))


def seed_bound(seed, image: np.ndarray, label: np.ndarray, length: int, p: int) -> float:
    # the seed reads an 8-bit RGB image and an (H, W, 1) target; it gets the 8-bit image our edge map
    # sees (min-max scaled, channel max), so both forests see the same edges
    gray = to_uint8(image.max(axis=0) if image.shape[0] > 1 else image[0])
    img8 = np.repeat(gray[..., None], 3, axis=-1)
    _, seq_mask, forest = seed.seed_patchify(
        img8, label.astype(np.uint8)[..., None], fixed_length=length, patch_size=p, kernel=KERNEL, canny=THRESHOLDS
    )
    rebuilt = forest.deserialize(np.asarray(seq_mask, dtype=np.float32)[..., None], p, 1)[..., 0]
    a, b = rebuilt > 0.5, label > 0
    return float(2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1))


def run_case(name, image, label, p, num_classes, lengths, seed) -> tuple[list[dict], dict]:
    t0 = time.perf_counter()
    edges = edge_map(image, KERNEL, THRESHOLDS)
    edge_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    soft = soft_edge_map(image, KERNEL, THRESHOLDS)
    soft_s = time.perf_counter() - t0
    blank = np.zeros(label.shape, dtype=bool)
    rows = []
    for length in lengths:
        paper = upper_bound(label, build_forest(edges, length, criterion="edges"), p, num_classes)
        uniform = upper_bound(label, build_forest(blank, length), p, num_classes)
        default = upper_bound(label, build_forest(soft, length, patch_size=p), p, num_classes)
        canny_error = upper_bound(label, build_forest(edges, length, patch_size=p), p, num_classes)
        prior = upper_bound(label, build_forest(edges, length, patch_size=p, area_prior=1.0), p, num_classes)
        best = max(paper, uniform)
        row = {
            "image": name,
            "L": length,
            "p": p,
            "paper (edges)": f"{paper:.4f}",
            "uniform": f"{uniform:.4f}",
            "default (soft, error)": f"{default:.4f}",
            "default - max": f"{default - best:+.4f}",
            "met": "yes" if default >= best - TOLERANCE else "no",
            "Canny + error": f"{canny_error:.4f}",
            "Canny + error, prior 1": f"{prior:.4f}",
        }
        if seed is not None:
            row["seed"] = f"{seed_bound(seed, image, label, length, p):.4f}"
        rows.append(row)
        print(f"done {name} L={length}", file=sys.stderr, flush=True)
    info = {
        "image": name,
        "shape": "x".join(str(s) for s in label.shape),
        "classes": num_classes,
        "edge pixels": f"{edges.mean():.4f}",
        "Canny edge recall": f"{edge_recall(edges, label):.3f}",
        "Canny map s": f"{edge_s:.2f}",
        "soft map s": f"{soft_s:.2f}",
    }
    return rows, info


MNI_FILES = tuple(f"mni_icbm152_{n}_tal_nlin_sym_09a_converted.nii.gz" for n in ("t1", "gm", "wm"))


def mni152_resampled(spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """MNI152 (1 mm) on a grid of ``spacing`` mm: ``(1, *grid)`` float32 T1 and the uint8 GM/WM label.

    Along an axis made coarser by an integer factor ``k`` the voxels are slab means of ``k`` (what a
    thick-slice acquisition records); along a finer one, linear interpolation (half-pixel centres).
    The GM/WM probability maps are resampled alike and thresholded at 127 on the new grid."""
    import nibabel as nib

    folder = find_real_data("mni152", MNI_FILES)
    if folder is None:
        raise SystemExit("MNI152 not found: set MONAI_SHF_DATA to the real-data folder (shared/data)")
    maps = np.stack(
        [nib.load(str(folder / f)).get_fdata(dtype=np.float32) for f in MNI_FILES]
    )  # (3, X, Y, Z): T1, GM, WM
    x = torch.from_numpy(maps)[None]
    pool = tuple(int(round(s)) if s >= 1 else 1 for s in spacing)
    if any(k > 1 for k in pool):
        x = torch.nn.functional.avg_pool3d(x, pool, pool)
    up = tuple(int(round(1 / s)) if s < 1 else 1 for s in spacing)
    if any(k > 1 for k in up):
        size = tuple(n * k for n, k in zip(x.shape[2:], up))
        x = torch.nn.functional.interpolate(x, size=size, mode="trilinear", align_corners=False)
    t1, gm, wm = x[0].numpy()
    label = np.zeros(t1.shape, dtype=np.uint8)
    label[gm > 127] = 1
    label[wm > 127] = 2
    return np.ascontiguousarray(t1[None]), label


def median_aspect(forest, spacing) -> float:
    mm = forest.sizes * np.asarray(spacing, dtype=np.float64)
    return float(np.median(mm.max(1) / mm.min(1)))


def anisotropic_rows(lengths=(512, 4096, 32768), p: int = 4) -> list[dict]:
    rows = []
    for spacing in ((1.0, 1.0, 5.0), (0.5, 0.5, 3.0)):
        image, label = mni152_resampled(spacing)
        soft = soft_edge_map(image, KERNEL, THRESHOLDS)
        blank = np.zeros(label.shape, dtype=bool)
        name = f"mni152 {'x'.join(f'{s:g}' for s in spacing)} mm"
        for length in lengths:
            aware = build_forest(soft, length, patch_size=p, spacing=spacing)
            cubes = build_forest(soft, length, patch_size=p)
            aware_bound, cubes_bound = upper_bound(label, aware, p, 3), upper_bound(label, cubes, p, 3)
            rows.append(
                {
                    "image": name,
                    "shape": "x".join(str(s) for s in label.shape),
                    "L": length,
                    "p": p,
                    "spacing-aware": f"{aware_bound:.4f}",
                    "voxel cubes": f"{cubes_bound:.4f}",
                    "aware - cubes": f"{aware_bound - cubes_bound:+.4f}",
                    "uniform aware": f"{upper_bound(label, build_forest(blank, length, spacing=spacing), p, 3):.4f}",
                    "uniform cubes": f"{upper_bound(label, build_forest(blank, length), p, 3):.4f}",
                    "aspect aware": f"{median_aspect(aware, spacing):.2f}",
                    "aspect cubes": f"{median_aspect(cubes, spacing):.2f}",
                    "padding aware/cubes": f"{aware.num_padding}/{cubes.num_padding}",
                }
            )
            print(f"done {name} L={length}", file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the 512^2 images only, two budgets each")
    parser.add_argument("--no-seed", action="store_true", help="skip the seed reference")
    parser.add_argument("--anisotropic", action="store_true", help="only the thick-slice MNI152 rows")
    args = parser.parse_args()
    if args.anisotropic:
        rows = anisotropic_rows()
        print(table(rows, list(rows[0])))
        print("\ndefault forests (soft edges, criterion 'error', patch_size p); GM/WM mean Dice of the upper bound")
        return
    seed = None if args.no_seed else load_seed()
    small = (256, 1024) if args.quick else (256, 1024, 2050)
    img, mask = nuclei2d()
    cases = [
        ("nuclei2d", img[None], (mask > 0).astype(np.uint8), 8, 2, small, seed),
        ("ihc2d (DAB)", *ihc2d(), 8, 2, small, seed),
    ]
    if not args.quick:
        cases.append(("ihc2d x8 4096^2 (DAB)", *ihc2d(tiles=2, upsample=4), 8, 2, (1024, 4096, 16384), None))
        cases.append(("mni152 3D (GM/WM)", *mni152_tissue(), 4, 3, (512, 4096, 32768), None))
    rows, infos = [], []
    for case in cases:
        r, i = run_case(*case)
        rows += r
        infos.append(i)
    columns = list(rows[0]) if seed is None else list(rows[0])
    if seed is not None and "seed" not in columns:
        columns.append("seed")
    print(table(rows, columns))
    print()
    print(table(infos, list(infos[0])))
    print(
        f"\npaper: Gaussian {KERNEL} + Canny {THRESHOLDS}, edge count; default: soft edges {THRESHOLDS[0]}/8 "
        "per pixel, expected error; soft class-fraction tokens + linear depatching; "
        f"met: default >= max(paper, uniform) - {TOLERANCE}"
    )


if __name__ == "__main__":
    main()
