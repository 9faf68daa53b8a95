"""Patching speed and memory: edges, build, serialize, deserialize, next to the seed and a memcopy.

2D, two real images:

* ``nuclei2d``: the nuclei image (colour-mapped to uint8 RGB, the binarised mask as a float32 label)
  resized up (nearest, so that edges stay one pixel wide as in a real high-resolution scan) to
  1024^2 / 4096^2 / 8192^2 with L = 1024 / 8281 / 10201. Sparse edges (about 2% of pixels).
* ``ihc2d``: texture-rich RGB tissue (shared/data/ihc2d/ihc.png, 512^2) resized 2x (bilinear) and
  tiled with mirroring to 8192^2, L = 10201; label: the stained (dark) tissue, grey < 128, as float32.
  Dense edges (about 20% of pixels), the common case in pathology.

p = 8, Gaussian 3 + Canny (50, 100). ``deserialize`` is timed on ``(2, L, p, p)`` random scores, as
float planes and as a class map (``argmax=True``; on a package without that argument, the argmax of
the planes, which is what a user had to do).
3D: the MNI152 T1 volume (grey-matter map > 127 as label) resampled to 128^3 and 256^3, p = 4.

Both sides are warmed up and timed in the same run (best of several; the machine is shared). The
seed (shared/reference/seed_shf.py) is 2D-only. Run:
``python benchmarks/patching.py [--quick | --only-8k] [--no-3d] [--no-seed]``.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

import cv2 as cv
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_time, ihc2d_rgb, load_seed, mni152, nuclei2d, peak_extra_bytes, table  # noqa: E402

from monai_shf.forest import (  # noqa: E402
    build_forest,
    deserialize,
    edge_map,
    serialize,
    to_uint8,  # noqa: E402
)

try:  # absent in checkouts before soft edges: the benchmark still runs against them
    from monai_shf.forest import soft_edge_map  # noqa: E402
except ImportError:
    soft_edge_map = None

MB = 1 << 20
HAS_ARGMAX = "argmax" in inspect.signature(deserialize).parameters


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{1e3 * seconds:.1f}"


def _ratio(seed: float | None, ours: float) -> str:
    return "" if seed is None else f"{seed / ours:.1f}x"


def ihc2d(side: int) -> tuple[np.ndarray, np.ndarray]:
    """Texture-rich RGB tissue ``(side, side, 3)`` uint8 and its float32 stain mask ``(side, side)``."""
    tile = ihc2d_rgb()
    tile = cv.resize(tile, (2 * tile.shape[1], 2 * tile.shape[0]), interpolation=cv.INTER_LINEAR)
    reps = -(-side // tile.shape[0])
    row = np.concatenate([tile if i % 2 == 0 else tile[:, ::-1] for i in range(reps)], axis=1)
    image = np.concatenate([row if i % 2 == 0 else row[::-1] for i in range(reps)], axis=0)[:side, :side]
    image = np.ascontiguousarray(image)
    label = (cv.cvtColor(image, cv.COLOR_RGB2GRAY) < 128).astype(np.float32)
    return image, label


def case_2d(
    source: str, side: int, length: int, seed, repeat: int, seed_repeat: int, seed_warmup: int = 1
) -> tuple[list[dict], dict]:
    if source == "ihc2d":
        image_hwc, label_hw = ihc2d(side)
        label = label_hw[None]
    else:
        img, mask = nuclei2d()
        rgb = cv.applyColorMap(to_uint8(img), cv.COLORMAP_VIRIDIS)  # real image, 3 distinct channels
        image_hwc = cv.resize(rgb, (side, side), interpolation=cv.INTER_NEAREST)
        label = cv.resize((mask > 0).astype(np.float32), (side, side), interpolation=cv.INTER_NEAREST)[None]
    image = np.ascontiguousarray(np.moveaxis(image_hwc, -1, 0))  # MONAI channel-first (3, H, W) uint8
    p, kernel, thresholds = 8, 3, (50, 100)
    name = f"2D {source} {side}^2 L={length}"

    edges = edge_map(image, kernel, thresholds)
    forest = build_forest(edges, length)
    pred = np.random.default_rng(0).random((2, length, p, p)).astype(np.float32)
    rows = []

    def row(op, ours_fn, seed_fn=None, mem=True, rep=repeat, seed_time=None):
        ours = best_time(ours_fn, repeat=rep)
        theirs = best_time(seed_fn, repeat=seed_repeat, warmup=seed_warmup) if seed_fn is not None else seed_time
        extra = peak_extra_bytes(ours_fn) if mem else None
        rows.append(
            {
                "case": name,
                "op": op,
                "ours ms": _ms(ours),
                "seed ms": _ms(theirs),
                "seed/ours": _ratio(theirs, ours),
                "peak extra MB": "" if extra is None else f"{extra / MB:.0f}",
                "x image bytes": "" if extra is None else f"{extra / image.nbytes:.2f}",
            }
        )
        return ours, theirs

    t_copy, _ = row("memcopy of the image", lambda: image.copy(), mem=False)
    t_edges, t_seed_edges = row(
        "edges (blur + Canny)",
        lambda: edge_map(image, kernel, thresholds),
        (lambda: cv.Canny(cv.GaussianBlur(image_hwc, (kernel, kernel), 0), *thresholds)) if seed else None,
        mem=False,
    )
    if soft_edge_map is not None:
        row("soft edges (the default score map)", lambda: soft_edge_map(image, kernel, thresholds), mem=False)
    domain = edges.astype(np.uint8) * 255
    t_build, s_build = row(
        "build",
        lambda: build_forest(edges, length),
        (lambda: seed.FixedHierachicalForest(domain=domain, fixed_length=length)) if seed else None,
    )
    seed_forest = seed.FixedHierachicalForest(domain=domain, fixed_length=length) if seed else None
    t_ser_img, _ = row(
        "serialize image (uint8 RGB, area)",
        lambda: serialize(image, forest, p),
        (lambda: seed_forest.serialize(image_hwc, size=(p, p, 3))) if seed else None,
    )
    label_hw1 = label[0][..., None]
    t_ser_lab, _ = row(
        "serialize label (float32, area)",
        lambda: serialize(label, forest, p),
        (lambda: seed_forest.serialize(label_hw1, size=(p, p, 1))) if seed else None,
    )
    seed_pred = np.ascontiguousarray(np.moveaxis(pred, 0, -1))
    t_deser, s_deser = row(
        "deserialize (2 channels, linear)",
        lambda: deserialize(pred, forest, "linear"),
        (lambda: seed_forest.deserialize(seed_pred, p, 2)) if seed else None,
    )
    if HAS_ARGMAX:
        labels_fn = lambda: deserialize(pred, forest, "linear", argmax=True)  # noqa: E731
    else:  # the package before argmax=True: the float planes, then their argmax
        labels_fn = lambda: deserialize(pred, forest, "linear").argmax(0).astype(np.uint8)  # noqa: E731
    t_labels, s_labels = row(
        "deserialize class map (2 channels, argmax)",
        labels_fn,
        seed_time=s_deser,  # the seed's deserialize (timed above) is its only depatching
    )
    mem_build_ser = peak_extra_bytes(
        lambda: (serialize(image, build_forest(edges, length), p), serialize(label, forest, p))
    )
    summary = {
        "case": name,
        "leaves": forest.num_leaves,
        "edge fraction": f"{edges.mean():.4f}",
        "build speed-up vs seed": _ratio(s_build, t_build),
        "deserialize speed-up vs seed": _ratio(s_deser, t_deser),
        "argmax deserialize speed-up vs seed": _ratio(s_labels, t_labels),
        "edges ms": _ms(t_edges),
        "build + serialize ms": _ms(t_build + t_ser_img + t_ser_lab),
        "(build + serialize) / edges": f"{(t_build + t_ser_img + t_ser_lab) / t_edges:.3f}",
        "build + serialize peak extra / image bytes": ""
        if mem_build_ser is None
        else f"{mem_build_ser / image.nbytes:.2f}",
        "memcopy ms": _ms(t_copy),
    }
    return rows, summary


def case_3d(side: int, length: int, repeat: int, with_itk: bool) -> list[dict]:
    t1, gm = mni152()
    vol = torch.nn.functional.interpolate(torch.from_numpy(t1)[None, None], size=(side,) * 3, mode="trilinear")[
        0
    ].numpy()
    lab = torch.nn.functional.interpolate(
        torch.from_numpy((gm > 127).astype(np.float32))[None, None], size=(side,) * 3, mode="nearest"
    )[0].numpy()
    p = 4
    name = f"3D {side}^3 L={length}"
    edges = edge_map(vol, 3, (50, 100), method="slicewise")
    forest = build_forest(edges, length)
    pred = np.random.default_rng(0).random((2, length, p, p, p)).astype(np.float32)
    rows = []

    def row(op, fn, rep=repeat, warmup=1, mem=True):
        t = best_time(fn, repeat=rep, warmup=warmup)
        extra = peak_extra_bytes(fn) if mem else None
        rows.append(
            {
                "case": name,
                "op": op,
                "ours ms": _ms(t),
                "peak extra MB": "" if extra is None else f"{extra / MB:.0f}",
                "x image bytes": "" if extra is None else f"{extra / vol.nbytes:.2f}",
            }
        )
        return t

    row("memcopy of the volume (float32)", lambda: vol.copy(), mem=False)
    row("edges slicewise (3 axes)", lambda: edge_map(vol, 3, (50, 100), method="slicewise"), mem=False)
    if soft_edge_map is not None:
        row("soft edges 3D (the default score map)", lambda: soft_edge_map(vol, 3, (50, 100)), mem=False)
    if with_itk:
        row("edges ITK N-D Canny", lambda: edge_map(vol, 3, (50, 100), method="itk"), rep=1, warmup=0, mem=False)
    row("build", lambda: build_forest(edges, length))
    row("serialize image (float32, area)", lambda: serialize(vol, forest, p))
    row("serialize label (float32, area)", lambda: serialize(lab, forest, p))
    row("deserialize (2 channels, linear)", lambda: deserialize(pred, forest, "linear"))
    rows[-1]["case"] += f" ({forest.num_leaves} leaves, edges {edges.mean():.3f})"
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the small cases")
    parser.add_argument("--only-8k", action="store_true", help="only the two 8192^2 2D cases (the targets)")
    parser.add_argument("--no-3d", action="store_true", help="skip the 3D cases")
    parser.add_argument("--no-seed", action="store_true", help="skip the seed reference")
    parser.add_argument("--source", choices=("nuclei2d", "ihc2d"), help="only the 2D cases of this image")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of ours (best is kept)")
    parser.add_argument(
        "--seed-repeat", type=int, default=2, help="timed runs of the seed (1: no warm-up either; it is slow)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch and OpenCV threads (0: their defaults); 1 on an overloaded machine",
    )
    args = parser.parse_args()
    if args.threads > 0:
        cv.setNumThreads(args.threads)
    torch.set_num_threads(args.threads if args.threads > 0 else max(1, torch.get_num_threads()))
    seed = None if args.no_seed else load_seed()
    cases_2d = [("nuclei2d", 1024, 1024)]
    if not args.quick:
        cases_2d += [("nuclei2d", 4096, 8281), ("nuclei2d", 8192, 10201), ("ihc2d", 8192, 10201)]
    if args.only_8k:
        cases_2d = [c for c in cases_2d if c[1] == 8192]
    if args.source:
        cases_2d = [c for c in cases_2d if c[0] == args.source]
    cases_3d = [] if args.no_3d or args.only_8k else [(128, 4096)] if args.quick else [(128, 4096), (256, 16384)]
    cols = ["case", "op", "ours ms", "seed ms", "seed/ours", "peak extra MB", "x image bytes"]
    rows, summaries = [], []
    for source, side, length in cases_2d:
        r, s = case_2d(source, side, length, seed, args.repeat, args.seed_repeat, seed_warmup=int(args.seed_repeat > 1))
        rows += r
        summaries.append(s)
        print(f"done {s['case']}", file=sys.stderr, flush=True)
        print(table(r, cols) + "\n\n" + table([s], list(s)) + "\n", file=sys.stderr, flush=True)
    for side, length in cases_3d:
        rows += case_3d(side, length, repeat=3, with_itk=side == 128)
        print(f"done 3D {side}^3", file=sys.stderr, flush=True)
    print(table(rows, cols))
    if summaries:
        print()
        print(table(summaries, list(summaries[0])))
    print(
        f"\ntorch {torch.__version__}, OpenCV {cv.__version__}, numpy {np.__version__}, threads: torch {torch.get_num_threads()}, OpenCV {cv.getNumThreads()}"
    )


if __name__ == "__main__":
    main()
