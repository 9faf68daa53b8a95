"""Whole-slide benchmark: time and peak RSS of each slide step on generated slides.

Each row is a function in ``ROWS`` run in its own child process (so its peak RSS, from
``getrusage``, is the row's alone, torch import included) on one generated pyramidal JPEG slide per
size: ``monai_shf.slide.make_slide`` (default; with its label slide ``slide_N_label.tif``) or
``--generator fast`` (:func:`fast_slide`). Slides are generated once and cached under ``--cache-dir``.

Rows (reading side): ``open + forest`` (``open_slide`` + ``build_slide_forest``), ``forest + tokens``
(the same plus ``serialize_slide``: the issue's target row), ``in-memory`` (tifffile reads level 0
whole, ``edge_map`` + ``build_forest`` + ``serialize``; sizes <= 16K^2 only) and ``MONAI WSIReader``
(``WSIReader(backend="tifffile")`` reading a few of the same leaves' regions at the levels the tokens
use, extrapolated to all ``L`` leaves; only levels whose longer side is <= 16K, since MONAI's tifffile
backend decodes a whole level per region). Writing side: ``depatch + mask write`` (``write_slide_mask``
of 2-class scores derived from the slide's tokens; only the write is timed), ``segment-slide`` (the whole
:func:`monai_shf.inference.segment_slide`: forest, tokens, a small SHF ViT (hidden 128, 2 layers, 4
heads, fused attention, random weights, seed 0), softmax and the pyramidal mask write; its notes give
each stage's time) and ``mask write by prediction`` (the mask write's cost depends on the prediction: a
random ViT's, the writer's worst case, against a region-like one), ``mask to geojson``
(:func:`monai_shf.slide.mask_to_geojson` of the label slide: QuPath polygons). Add a row: write ``def row_x(ctx) -> dict`` and append it.

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
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA  # noqa: E402  (also points MONAI_SHF_DATA at the real data: generated slides use real tissue)

IHC = DATA / "ihc2d" / "ihc.png"


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


def _period() -> np.ndarray:
    """One seamless period of tissue texture: ihc2d (or a synthetic stand-in) and its mirror images,
    ``(1024, 1024, 3)`` uint8 RGB."""
    import cv2 as cv

    if IHC.exists():
        base = cv.cvtColor(cv.imread(str(IHC)), cv.COLOR_BGR2RGB)
    else:
        rng = np.random.default_rng(0)
        base = cv.GaussianBlur((rng.random((512, 512, 3)) * 255).astype(np.uint8), (9, 9), 0)
    base = cv.resize(base, (512, 512), interpolation=cv.INTER_AREA)
    period = np.concatenate([base, base[:, ::-1]], axis=1)
    return np.ascontiguousarray(np.concatenate([period, period[::-1]], axis=0))


def _encoded_tiles(tiles: list[np.ndarray], **options: Any) -> list[bytes]:
    """JPEG bytes of each ``(t, t, 3)`` tile exactly as tifffile writes them with ``options``."""
    import tempfile

    import tifffile

    t = tiles[0].shape[0]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tiles.tif"
        tifffile.imwrite(path, np.concatenate(tiles, axis=1), tile=(t, t), **options)
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            out = []
            for offset, count in zip(page.dataoffsets, page.databytecounts):
                tif.filehandle.seek(offset)
                out.append(tif.filehandle.read(count))
    return out


def generate_slide(path: Path, size: int, generator: str = "make_slide", tile: int = 512) -> Path:
    """The benchmark slide: ``monai_shf.slide.make_slide`` (real tissue texture, with its label slide
    beside it), or ``generator="fast"``: :func:`fast_slide`."""
    if generator == "make_slide":
        from monai_shf.data import make_slide

        make_slide(path, size, tile=tile)
        return path
    return fast_slide(path, size, tile)


def fast_slide(path: Path, size: int, tile: int = 512) -> Path:
    """A pyramidal RGB JPEG slide (level 0 plus 2x levels down to one tile, flat IFD chain, 0.25 mpp).

    Tissue (the ihc2d texture, mirrored: seamless) on blocks of 4096 level-0 pixels where a smooth
    random field is positive, white glass elsewhere, four brightness variants. Every level is the
    texture at that scale, so the pyramid is consistent. Levels whose tiles lie inside one block are
    written from a few pre-encoded tiles (a 64K^2 slide in a minute on two cores, ~1 GB); the coarse
    levels are rendered tile by tile."""
    import cv2 as cv
    import tifffile

    block = 4096
    levels = 1
    while (size >> (levels - 1)) > tile:
        levels += 1
    period = _period()
    blocks = -(-size // block)
    rng = np.random.default_rng(size)
    field = cv.resize(rng.normal(size=(max(2, blocks // 4 + 2),) * 2).astype(np.float32), (blocks, blocks))
    tissue = field > -0.2
    shade = np.clip(((field + 1.5) * 1.3).astype(int), 0, 3)  # brightness variant of each block
    options = {"photometric": "rgb", "compression": "jpeg", "compressionargs": {"level": 85}, "metadata": None}

    def texture_tile(k: int, brightness: int) -> np.ndarray:
        side = max(1, period.shape[0] >> k)
        small = cv.resize(period, (side, side), interpolation=cv.INTER_AREA) if k else period
        reps = -(-tile // side)
        mosaic = np.tile(small, (reps, reps, 1))[:tile, :tile].astype(np.float32)
        return np.clip(mosaic * (0.8 + 0.1 * brightness), 0, 255).astype(np.uint8)

    white = np.full((tile, tile, 3), 242, np.uint8)
    tmp = path.with_name(path.name + ".tmp")
    with tifffile.TiffWriter(tmp, bigtiff=True) as writer:
        for k in range(levels):
            side = max(1, size >> k)
            span = tile << k  # level-0 pixels per tile
            grid = -(-side // tile)
            if span <= block:  # every tile inside one block: pre-encoded variants
                variants = _encoded_tiles([white] + [texture_tile(k, b) for b in range(4)], **options)

                def tiles(grid=grid, span=span, variants=variants):
                    for r in range(grid):
                        for c in range(grid):
                            by, bx = (r * span) // block, (c * span) // block
                            yield variants[1 + shade[by, bx]] if tissue[by, bx] else variants[0]

                writer.write(
                    tiles(),
                    shape=(side, side, 3),
                    dtype=np.uint8,
                    tile=(tile, tile),
                    subfiletype=1 if k else 0,
                    resolution=(1e4 / (0.25 * 2**k),) * 2,
                    resolutionunit="CENTIMETER",
                    **options,
                )
            else:  # coarse levels: few tiles, rendered from the block masks
                texture = [texture_tile(k, b) for b in range(4)]
                cells = block >> k  # level-k pixels per block

                def rendered(grid=grid, cells=cells, texture=texture):
                    for r in range(grid):
                        for c in range(grid):
                            out = white.copy()
                            for y in range(0, tile, cells):
                                for x in range(0, tile, cells):
                                    by, bx = (r * tile + y) // cells, (c * tile + x) // cells
                                    if by < blocks and bx < blocks and tissue[by, bx]:
                                        out[y : y + cells, x : x + cells] = texture[shade[by, bx]][
                                            y : y + cells, x : x + cells
                                        ]
                            yield out

                writer.write(
                    rendered(),
                    shape=(side, side, 3),
                    dtype=np.uint8,
                    tile=(tile, tile),
                    subfiletype=1,
                    resolution=(1e4 / (0.25 * 2**k),) * 2,
                    resolutionunit="CENTIMETER",
                    **options,
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
    cpu = time.process_time()
    t = time.perf_counter()
    for i in pick:
        k = int(levels[i])
        location = (int(starts[i, 0] * scales[k][0]), int(starts[i, 1] * scales[k][1]))
        reader.get_data(wsi, location=location, size=tuple(int(s) for s in sizes[i]), level=k)
    per_region = (time.perf_counter() - t) / len(pick)
    cpu_per_region = (time.process_time() - cpu) / len(pick)
    return {
        "time_s": per_region * forest.num_leaves,
        "cpu_s": cpu_per_region * forest.num_leaves,
        "note": f"extrapolated: {per_region:.2f} s per region x {forest.num_leaves} leaves "
        f"({len(pick)} regions at levels {sorted({int(levels[i]) for i in pick})})",
    }


def row_mask_write(ctx: Context) -> dict[str, Any]:
    """Depatch + pyramidal mask write (``write_slide_mask``) of ``(2, L, p, p)`` scores derived from
    the slide's own tokens (tissue vs glass by brightness: spatially coherent like a network's
    output). Only ``write_slide_mask`` is timed; the forest and tokens are made before."""
    from monai_shf.slide import build_slide_forest, open_slide, serialize_slide, write_slide_mask

    with open_slide(ctx.path) as slide:
        forest = build_slide_forest(slide, ctx.length, max_side=ctx.max_side)
        tokens = serialize_slide(slide, forest, ctx.patch)
        darkness = (200.0 - tokens.mean(0)) / 20.0  # > 0 on stained tissue, < 0 on glass
        pred = np.stack([-darkness, darkness]).astype(np.float32)
        out = ctx.path.with_name(ctx.path.stem + "_mask.tif")
        t, cpu = time.perf_counter(), time.process_time()
        write_slide_mask(out, forest, pred, like=slide)
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    leaf_classes = pred.argmax(0)[: forest.num_leaves].reshape(forest.num_leaves, -1)
    mixed = float((leaf_classes.min(1) != leaf_classes.max(1)).mean())
    return {
        "time_s": seconds,
        "note": f"CPU {cpu:.1f} s (2 writer threads); {out.stat().st_size / 2**20:.1f} MiB mask, "
        f"{mixed:.0%} of leaves hold 2 classes",
    }


SMALL_VIT = {
    "network_def#hidden_size": 128,
    "network_def#mlp_dim": 256,
    "network_def#num_layers": 2,
    "network_def#num_heads": 4,
    "network_def#use_flash_attention": True,
}
"""The small ViT of the ``segment-slide`` row (config overrides of the bundle's ``network_def``)."""


def row_segment_slide(ctx: Context) -> dict[str, Any]:
    """The whole ``monai-shf segment-slide`` (setup included: network built from the bundle's config)."""
    from monai_shf.inference import segment_slide

    out = ctx.path.with_name(f"{ctx.path.stem}_segment_mask.tif")
    t = time.perf_counter()
    r = segment_slide(
        ctx.path,
        out,
        length=ctx.length,
        patch_size=ctx.patch,
        max_side=ctx.max_side,
        untrained=True,
        overrides=SMALL_VIT,
    )
    total = time.perf_counter() - t
    mask_mib = out.stat().st_size / 2**20
    out.unlink()
    stages = ", ".join(f"{name} {seconds:.1f}" for name, seconds in r["seconds"].items())
    cpu = ", ".join(f"{name} {seconds:.1f}" for name, seconds in r["cpu_seconds"].items())
    return {
        "time_s": total,
        "note": f"wall: {stages} s; CPU (all threads): {cpu} s; {r['leaves']} leaves; mask {mask_mib:.1f} MiB",
    }


def row_mask_by_prediction(ctx: Context) -> dict[str, Any]:
    """``write_slide_mask`` of one forest with three predictions: the random small ViT of the
    ``segment-slide`` row (a class change in almost every leaf: the writer's worst case), its argmax as
    labels, and a region-like stand-in for a trained model (softmax of each token's brightness: glass,
    tissue, dark tissue). The row's time is the region-like one."""
    import torch

    from monai_shf.networks import SHFViT
    from monai_shf.slide import build_slide_forest, open_slide, serialize_slide, write_slide_mask

    out = ctx.path.with_name(f"{ctx.path.stem}_probe_mask.tif")
    notes, region_like = [], None
    with open_slide(ctx.path) as slide:
        forest = build_slide_forest(slide, ctx.length, max_side=ctx.max_side)
        tokens = serialize_slide(slide, forest, ctx.patch) / 255.0
        torch.manual_seed(0)
        net = SHFViT(
            3,
            3,
            ctx.patch,
            ctx.length,
            hidden_size=128,
            mlp_dim=256,
            num_layers=2,
            num_heads=4,
            use_flash_attention=True,
        )
        with torch.inference_mode():
            logits = net.eval()(
                torch.from_numpy(tokens)[None],
                torch.from_numpy(forest.geom())[None],
                torch.from_numpy(forest.token_mask())[None],
            )
        random_probs = torch.softmax(logits[0], 0).numpy()
        gray = tokens.mean(0)
        scores = np.stack([gray - 0.85, 0.85 - np.abs(gray - 0.7), 0.55 - gray]).astype(np.float32) * 20
        predictions = [
            ("random ViT", random_probs),
            ("its argmax labels", random_probs.argmax(0)[None].astype(np.uint8)),
            ("region-like", torch.softmax(torch.from_numpy(scores), 0).numpy()),
        ]
        for name, pred in predictions:
            t, c = time.perf_counter(), time.process_time()
            write_slide_mask(out, forest, pred, like=slide)
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            notes.append(f"{name}: {wall:.1f} s wall, {cpu:.1f} s CPU, {out.stat().st_size / 2**20:.1f} MiB")
            region_like = (wall, cpu)
            out.unlink()
    return {"time_s": region_like[0], "cpu_s": region_like[1], "note": "; ".join(notes)}


def row_mask_to_geojson(ctx: Context) -> dict[str, Any]:
    """``mask_to_geojson`` of the slide's label slide (``make_slide``'s, beside it): QuPath polygons of
    every class, traced tile by tile at level 0 and merged across tiles. The row the memory target is
    about: its peak should follow the slide's width (the open polygons), not its area."""
    from monai_shf.slide import mask_to_geojson

    label = ctx.path.with_name(ctx.path.stem + "_label.tif")
    if not label.exists():
        return {"skip": f"no label slide {label.name} (--generator make_slide writes one)"}
    out = ctx.path.with_name(ctx.path.stem + "_label.geojson")
    r = mask_to_geojson(label, out)
    size_mib = out.stat().st_size / 2**20
    out.unlink()
    counts = ", ".join(f"{name} {n}" for name, n in r["features"].items())
    return {"time_s": r["seconds"], "note": f"{counts} polygons; {size_mib:.0f} MiB GeoJSON"}


ROWS: list[tuple[str, Callable[[Context], dict[str, Any]]]] = [
    ("open + forest", row_forest),
    ("forest + tokens", row_forest_tokens),
    ("in-memory forest + tokens", row_in_memory),
    ("MONAI WSIReader(tifffile) regions", row_monai_wsireader),
    ("depatch + mask write", row_mask_write),
    ("segment-slide", row_segment_slide),
    ("mask write by prediction", row_mask_by_prediction),
    ("mask to geojson", row_mask_to_geojson),
]


# ----------------------------------------------------------------------------------------- driver


def _child(args: argparse.Namespace) -> None:
    ctx = Context(Path(args.slide), args.size, args.length, args.patch, args.max_side, args.regions)
    fn = dict(ROWS)[args.row]
    cpu = time.process_time()
    result = fn(ctx)
    # CPU seconds of all threads (imports excluded; a row may report its own): on a shared machine
    # wall time includes waiting for a core
    result.setdefault("cpu_s", time.process_time() - cpu)
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
    parser.add_argument(
        "--generator",
        choices=("make_slide", "fast"),
        default="make_slide",
        help="make_slide: monai_shf.slide.make_slide (tissue texture + label slide); fast: pre-encoded tiles",
    )
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
    print("| slide | row | wall (s) | CPU (s) | peak RSS (GiB) | notes |\n|---|---|---|---|---|---|")
    for size in args.sizes:
        path = cache / (f"slide_{size}.tif" if args.generator == "make_slide" else f"fast_slide_{size}.tif")
        if not path.exists():
            t = time.perf_counter()
            generate_slide(path, size, args.generator)
            print(f"(generated {path} in {time.perf_counter() - t:.0f} s, {path.stat().st_size / 2**20:.0f} MiB)")
        for name in args.rows:
            cmd = [sys.executable, __file__, "--row", name, "--slide", str(path), "--size", str(size)]
            cmd += ["--length", str(args.length), "--patch", str(args.patch), "--max-side", str(args.max_side)]
            cmd += ["--regions", str(args.regions)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not lines:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                print(f"| {size}^2 | {name} | failed | | | {tail[0][:150]} |")
                continue
            r = json.loads(lines[-1][7:])
            if "skip" in r:
                print(f"| {size}^2 | {name} | - | - | - | {r['skip']} |")
            else:
                print(
                    f"| {size}^2 | {name} | {r['time_s']:.2f} | {r['cpu_s']:.2f} | {r['peak_rss_gib']:.2f} "
                    f"| {r.get('note', '')} |"
                )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
