"""Whole-slide benchmark (issue 7 item 5): time and peak RSS of each slide step on generated slides.

Each row is a function in ``ROWS`` run in its own child process (so its peak RSS, from
``getrusage``, is the row's alone, torch import included) on one generated pyramidal JPEG slide per
size. Slides are generated once and cached under ``--cache-dir`` (a 64K^2 slide is about 1 GB).

Rows (reading side): ``open + forest`` (``open_slide`` + ``build_slide_forest``), ``forest + tokens``
(the same plus ``serialize_slide``: the issue's target row), ``in-memory`` (tifffile reads level 0
whole, ``edge_map`` + ``build_forest`` + ``serialize``; sizes <= 16K^2 only) and ``MONAI WSIReader``
(``WSIReader(backend="tifffile")`` reading a few of the same leaves' regions at the levels the tokens
use, extrapolated to all ``L`` leaves; only levels whose longer side is <= 16K, since MONAI's tifffile
backend decodes a whole level per region). Add a row: write ``def row_x(ctx) -> dict`` and append it.

Usage::

    python benchmarks/slide.py --sizes 16384 32768 65536 --length 16384 --patch 8

Timings on a shared 2-core machine are indicative only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
IHC = ROOT.parent / "shared" / "data" / "ihc2d" / "ihc.png"


@dataclass
class Context:
    """What a row gets: the slide, its size and the SHF parameters."""

    path: Path
    size: int
    length: int
    patch: int
    max_side: int
    regions: int


# ------------------------------------------------------------------------------------------- slides


def _texture_levels(levels: int) -> list[np.ndarray]:
    """The tissue texture (ihc2d, or a synthetic stand-in) at scales 1, 1/2, 1/4, ... (RGB uint8)."""
    import cv2 as cv

    if IHC.exists():
        base = cv.cvtColor(cv.imread(str(IHC)), cv.COLOR_BGR2RGB)
    else:
        rng = np.random.default_rng(0)
        base = cv.GaussianBlur((rng.random((512, 512, 3)) * 255).astype(np.uint8), (9, 9), 0)
    # one mirrored period (2x2 copies) so the mosaic has no seams
    period = np.concatenate([base, base[:, ::-1]], axis=1)
    period = np.concatenate([period, period[::-1]], axis=0)
    out = [period]
    for _ in range(levels - 1):
        prev = out[-1]
        out.append(
            cv.resize(prev, (max(1, prev.shape[1] // 2), max(1, prev.shape[0] // 2)), interpolation=cv.INTER_AREA)
        )
    return out


def generate_slide(path: Path, size: int, tile: int = 512) -> Path:
    """A pyramidal RGB JPEG slide (level 0 plus 2x levels down to one tile, flat IFD chain), written
    tile by tile from generators: the ihc2d texture mirrored and modulated by a slow brightness field.
    Uses ``monai_shf.slide.make_slide`` when the package has it."""
    try:
        from monai_shf.slide import make_slide
    except ImportError:
        make_slide = None
    if make_slide is not None:
        make_slide(path, size, tile=tile)
        return path
    import tifffile

    levels = 1
    while (size >> (levels - 1)) > tile:
        levels += 1
    textures = _texture_levels(levels)

    def tiles(k: int):
        side = max(1, size >> k)
        tex = textures[k]
        th, tw = tex.shape[:2]
        for y in range(0, side, tile):
            for x in range(0, side, tile):
                rows = (np.arange(y, y + tile) % th)[:, None]
                cols = (np.arange(x, x + tile) % tw)[None, :]
                block = tex[rows, cols].astype(np.float32)
                # slow brightness variation (tissue density) so tiles differ across the slide
                gy = np.cos((np.arange(y, y + tile) / side) * 6.0)[:, None, None]
                gx = np.sin((np.arange(x, x + tile) / side) * 5.0)[None, :, None]
                yield np.clip(block * (0.85 + 0.15 * gy * gx), 0, 255).astype(np.uint8)

    tmp = path.with_suffix(".tmp.tif")
    with tifffile.TiffWriter(tmp, bigtiff=True) as writer:
        for k in range(levels):
            side = max(1, size >> k)
            writer.write(
                tiles(k),
                shape=(side, side, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": 85},
                subfiletype=1 if k else 0,
                resolution=(1e4 / 0.25, 1e4 / 0.25),
                resolutionunit="CENTIMETER",
                metadata=None,
            )
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------------------------- rows


def row_forest(ctx: Context) -> dict[str, Any]:
    from monai_shf.slide import build_slide_forest, open_slide

    t = time.perf_counter()
    with open_slide(ctx.path) as slide:
        forest = build_slide_forest(slide, ctx.length, max_side=ctx.max_side)
    return {"time_s": time.perf_counter() - t, "note": f"{forest.num_leaves} leaves"}


def row_forest_tokens(ctx: Context) -> dict[str, Any]:
    from monai_shf.slide import build_slide_forest, open_slide, serialize_slide

    t = time.perf_counter()
    with open_slide(ctx.path) as slide:
        forest = build_slide_forest(slide, ctx.length, max_side=ctx.max_side)
        t_forest = time.perf_counter() - t
        tokens = serialize_slide(slide, forest, ctx.patch)
        decodes = slide.level_decodes
    total = time.perf_counter() - t
    return {
        "time_s": total,
        "note": f"forest {t_forest:.2f} s + tokens {total - t_forest:.2f} s; {tokens.shape}; tiles decoded per level {decodes}",
    }


def row_in_memory(ctx: Context) -> dict[str, Any]:
    if ctx.size > 16384:
        return {"skip": "level 0 in memory only up to 16K^2"}
    import tifffile

    from monai_shf.forest import build_forest, edge_map, serialize

    t = time.perf_counter()
    image = tifffile.imread(ctx.path, key=0).transpose(2, 0, 1)
    t_read = time.perf_counter() - t
    forest = build_forest(edge_map(image), ctx.length)
    tokens = serialize(image, forest, ctx.patch)
    total = time.perf_counter() - t
    return {"time_s": total, "note": f"read {t_read:.2f} s, forest + tokens {total - t_read:.2f} s; {tokens.shape}"}


def row_monai_wsireader(ctx: Context) -> dict[str, Any]:
    """MONAI's WSIReader(tifffile) reading a few leaves' regions at their token levels, extrapolated."""
    from monai.data import WSIReader

    from monai_shf.slide import build_slide_forest, leaf_levels, open_slide

    with open_slide(ctx.path) as slide:
        forest = build_slide_forest(slide, ctx.length, max_side=ctx.max_side)
        levels, starts, sizes = leaf_levels(slide, forest, ctx.patch)
        ok = np.flatnonzero([max(slide.level_shapes[k]) <= 16384 for k in levels])
        scales = slide.level_scales
    if not len(ok):
        return {"skip": "no leaf is read from a level <= 16K"}
    pick = np.random.default_rng(0).choice(ok, size=min(ctx.regions, len(ok)), replace=False)
    reader = WSIReader(backend="tifffile", level=0)
    wsi = reader.read(str(ctx.path))
    t = time.perf_counter()
    for i in pick:
        k = int(levels[i])
        location = (int(starts[i, 0] * scales[k][0]), int(starts[i, 1] * scales[k][1]))
        reader.get_data(wsi, location=location, size=tuple(int(s) for s in sizes[i]), level=k)
    per_region = (time.perf_counter() - t) / len(pick)
    return {
        "time_s": per_region * forest.num_leaves,
        "note": f"extrapolated: {per_region:.2f} s per region x {forest.num_leaves} leaves "
        f"({len(pick)} regions at levels {sorted({int(levels[i]) for i in pick})})",
    }


ROWS: list[tuple[str, Callable[[Context], dict[str, Any]]]] = [
    ("open + forest", row_forest),
    ("forest + tokens", row_forest_tokens),
    ("in-memory forest + tokens", row_in_memory),
    ("MONAI WSIReader(tifffile) regions", row_monai_wsireader),
]


# ----------------------------------------------------------------------------------------- driver


def _child(args: argparse.Namespace) -> None:
    ctx = Context(Path(args.slide), args.size, args.length, args.patch, args.max_side, args.regions)
    fn = dict(ROWS)[args.row]
    result = fn(ctx)
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16384, 32768, 65536])
    parser.add_argument("--length", type=int, default=16384)
    parser.add_argument("--patch", type=int, default=8)
    parser.add_argument("--max-side", type=int, default=8192)
    parser.add_argument("--regions", type=int, default=3, help="regions MONAI's WSIReader reads (extrapolated)")
    parser.add_argument("--rows", nargs="+", default=[name for name, _ in ROWS], help="row names to run")
    parser.add_argument("--cache-dir", default="/tmp/monai_shf_bench")
    parser.add_argument("--row", help=argparse.SUPPRESS)
    parser.add_argument("--slide", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        _child(args)
        return
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    print(f"L = {args.length}, p = {args.patch}, max_side = {args.max_side}; one child process per row")
    print("| slide | row | time (s) | peak RSS (GiB) | notes |\n|---|---|---|---|---|")
    for size in args.sizes:
        path = cache / f"slide_{size}.tif"
        if not path.exists():
            t = time.perf_counter()
            generate_slide(path, size)
            print(f"(generated {path} in {time.perf_counter() - t:.0f} s, {path.stat().st_size / 2**20:.0f} MiB)")
        for name in args.rows:
            cmd = [sys.executable, __file__, "--row", name, "--slide", str(path), "--size", str(size)]
            cmd += ["--length", str(args.length), "--patch", str(args.patch), "--max-side", str(args.max_side)]
            cmd += ["--regions", str(args.regions)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not lines:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                print(f"| {size}^2 | {name} | failed | | {tail[0][:150]} |")
                continue
            r = json.loads(lines[-1][7:])
            if "skip" in r:
                print(f"| {size}^2 | {name} | - | - | {r['skip']} |")
            else:
                print(f"| {size}^2 | {name} | {r['time_s']:.2f} | {r['peak_rss_gib']:.2f} | {r.get('note', '')} |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
