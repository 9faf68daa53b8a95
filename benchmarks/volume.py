"""Out-of-core volume benchmark: peak RSS and wall time of the OME-Zarr pipeline per volume size.

Every row runs in its own child process (so its peak RSS, from ``getrusage``, is the row's alone, imports
included) on one generated uint16 OME-Zarr volume per size (``monai_shf.data.make_volume``: the real MNI152
brain scaled to 256 voxels and mirror-tiled, 128³ chunks, cached under ``--cache-dir``). Rows:

* ``zarr read (level 0)``: the reference time: every level-0 chunk read once with ``zarr`` (decompressed
  into numpy, discarded), one after the other.
* ``forest + tokens + mask``: ``build_volume_forest`` (score map of the finest level of <= 256³),
  ``serialize_volume`` and ``write_volume_mask`` of region-like 3-class scores derived from the tokens
  (a soft intensity classification; no network). The memory target row: peak RSS <= 1.5 GiB at 1024³ and
  2048³, growth from 512³ to 2048³ <= 1.3x.
* ``segment-volume``: the whole :func:`monai_shf.apps.volume.segment_volume` (the 3D bundle's spec,
  ``L = 2048``, ``p = 4``; a small SHF ViT: hidden 128, 2 layers, 4 heads, random weights, seed 0). The
  time target: <= 3x ``zarr read (level 0)``.
* ``MONAI sliding window + ZarrAvgMerger`` (the peer, ``--peer-sizes`` only): MONAI's ``PatchInferer``
  with ``SlidingWindowSplitter`` (64³ windows, no overlap, batches of 4) and ``ZarrAvgMerger`` (scores
  merged in a zarr store on disk), a small MONAI ``UNet`` (channels 8/16/32, random weights) and the
  argmax written chunk by chunk into a uint8 zarr array. MONAI's splitter takes an in-memory tensor only,
  so level 0 is read whole first (uint16: 2 bytes per voxel; 16 GiB at 2048³, hence the size limit).

Usage (develop at 256/512; the large sizes once, niced)::

    nice python benchmarks/volume.py --sizes 512 1024 2048 --peer-sizes 512 --cache-dir /tmp/shf_volumes

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
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA  # noqa: E402, F401  (points MONAI_SHF_DATA at the real data: make_volume needs MNI152)

SMALL_VIT = {"network_def#hidden_size": 128, "network_def#mlp_dim": 256, "network_def#num_layers": 2}
SMALL_VIT["network_def#num_heads"] = 4
MAX_SIDE = 256


def _peak() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def row_read(path: Path, out_dir: Path) -> dict[str, Any]:
    import zarr

    arr = zarr.open_group(str(path), mode="r")["0"]
    chunks = arr.chunks
    t = time.perf_counter()
    total = 0
    for z in range(0, arr.shape[0], chunks[0]):
        for y in range(0, arr.shape[1], chunks[1]):
            for x in range(0, arr.shape[2], chunks[2]):
                block = arr[z : z + chunks[0], y : y + chunks[1], x : x + chunks[2]]
                total += block.size
    return {"seconds": time.perf_counter() - t, "notes": f"{total / 1e9:.2f} G voxels, chunks {chunks}"}


def _region_scores(tokens: np.ndarray) -> np.ndarray:
    """``(3, L, p, p, p)`` soft 3-class scores of ``(1, L, p, p, p)`` intensity tokens in [0, 1]."""
    centres = np.array([0.05, 0.45, 0.8], np.float32)[:, None, None, None, None]
    return -((tokens - centres) ** 2) / 0.02


def row_pipeline(path: Path, out_dir: Path) -> dict[str, Any]:
    from monai_shf.apps.volume import volume_intensity_range, volume_tokens
    from monai_shf.forest import ForestSpec
    from monai_shf.volume import build_volume_forest, open_volume, write_volume_mask

    t0 = time.perf_counter()
    volume = open_volume(path)
    spec = ForestSpec.create(2048, patch_size=4, min_size=2, max_side=MAX_SIDE)
    forest = build_volume_forest(volume, spec)
    t1 = time.perf_counter()
    tokens = volume_tokens(volume, forest, 4, volume_intensity_range(volume))
    t2 = time.perf_counter()
    scores = _region_scores(tokens)
    del tokens
    out = write_volume_mask(out_dir / "pipeline_mask.zarr", forest, scores, like=volume)
    t3 = time.perf_counter()
    notes = f"forest {t1 - t0:.1f} s, tokens {t2 - t1:.1f} s, mask {t3 - t2:.1f} s; {forest.num_leaves} leaves"
    return {"seconds": t3 - t0, "notes": notes, "out": str(out)}


def row_segment(path: Path, out_dir: Path) -> dict[str, Any]:
    from monai_shf.apps.volume import segment_volume
    from monai_shf.inference import SEGMENT_STAGES

    r = segment_volume(path, out_dir / "segment_mask.zarr", untrained=True, overrides=SMALL_VIT)
    stages = ", ".join(f"{s} {r['seconds'][s]:.1f} s" for s in SEGMENT_STAGES)
    return {"seconds": r["total_seconds"], "notes": f"{stages}; forest level {r['forest_level']}"}


def row_peer(path: Path, out_dir: Path) -> dict[str, Any]:
    import torch
    import zarr
    from monai.inferers import PatchInferer, SlidingWindowSplitter, ZarrAvgMerger
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    net = UNet(3, 1, 3, channels=(8, 16, 32), strides=(2, 2), num_res_units=1).eval()
    t0 = time.perf_counter()
    level0 = zarr.open_group(str(path), mode="r")["0"]
    image = torch.from_numpy(np.asarray(level0[:]).astype(np.int16, copy=False).view(np.int16))  # 2 B/voxel
    t1 = time.perf_counter()

    def network(x: torch.Tensor) -> torch.Tensor:
        return net(x.to(torch.int32).bitwise_and(0xFFFF).float() / 65535.0)  # uint16 bits back to [0, 1]

    store = out_dir / "peer_scores.zarr"
    inferer = PatchInferer(
        splitter=SlidingWindowSplitter(64, overlap=0.0),
        merger_cls=ZarrAvgMerger,
        batch_size=4,
        store=str(store),
        value_store=str(out_dir / "peer_values.zarr"),
        count_store=str(out_dir / "peer_counts.zarr"),
    )
    with torch.inference_mode():
        merged = inferer(image[None, None], network)
    del image
    t2 = time.perf_counter()
    merged = merged if not isinstance(merged, (list, tuple)) else merged[0]
    labels = zarr.open(str(out_dir / "peer_labels.zarr"), mode="w", shape=level0.shape, chunks=(64,) * 3, dtype="u1")
    c = 64
    for z in range(0, level0.shape[0], c):
        block = np.asarray(merged[0, :, z : z + c])
        labels[z : z + c] = block.argmax(0).astype(np.uint8)
    t3 = time.perf_counter()
    notes = f"read level 0 {t1 - t0:.1f} s, sliding window {t2 - t1:.1f} s, argmax write {t3 - t2:.1f} s"
    return {"seconds": t3 - t0, "notes": notes}


ROWS = {
    "zarr read (level 0)": row_read,
    "forest + tokens + mask": row_pipeline,
    "segment-volume": row_segment,
    "MONAI sliding window + ZarrAvgMerger": row_peer,
}


def _child(row: str, path: Path, out_dir: Path) -> None:
    torch_threads = os.environ.get("OMP_NUM_THREADS")
    result = ROWS[row](path, out_dir)
    result.update(row=row, peak_rss=_peak(), threads=torch_threads)
    print("RESULT " + json.dumps(result))


def _volume(size: int, cache: Path) -> tuple[Path, float | None]:
    path = cache / f"volume_{size}.zarr"
    if (path / ".zattrs").is_file():
        return path, None
    t = time.perf_counter()
    cmd = [sys.executable, "-m", "monai_shf.cli", "make-volume", str(path), "--size", str(size), "--no-label"]
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return path, time.perf_counter() - t


def _run_row(row: str, path: Path, out_dir: Path) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--child", row, "--path", str(path), "--out-dir", str(out_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"row": row, "error": (done.stderr or done.stdout)[-2000:]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--peer-sizes", type=int, nargs="*", default=[512])
    p.add_argument("--cache-dir", type=Path, default=Path("/tmp/shf_volumes"))
    p.add_argument("--rows", nargs="*", default=None, help="row names (default: all)")
    p.add_argument("--keep-outputs", action="store_true", help="keep the masks written (default: removed)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--path", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--out-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args.child, args.path, args.out_dir)
        return
    import shutil

    args.cache_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for size in args.sizes:
        path, made = _volume(size, args.cache_dir)
        if made is not None:
            print(f"generated {path} in {made:.0f} s", flush=True)
        for row in args.rows or list(ROWS):
            if row.startswith("MONAI") and size not in args.peer_sizes:
                continue
            out_dir = args.cache_dir / f"out_{size}"
            r = _run_row(row, path, out_dir)
            r["size"] = size
            results.append(r)
            if "error" in r:
                print(f"{size}^3  {row}: ERROR {r['error']}", flush=True)
            else:
                gib = r["peak_rss"] / 2**30
                print(f"{size}^3  {row:38s} {r['seconds']:8.1f} s  {gib:5.2f} GiB  {r['notes']}", flush=True)
            if not args.keep_outputs:
                shutil.rmtree(out_dir, ignore_errors=True)
    _summary(results)


def _summary(results: list[dict[str, Any]]) -> None:
    by = {(r["size"], r["row"]): r for r in results if "error" not in r}
    sizes = sorted({r["size"] for r in results})
    print("\n| size | row | wall s | peak RSS GiB | notes |\n|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['size']}³ | {r['row']} | error | | {r['error'][-200:]!r} |")
        else:
            print(f"| {r['size']}³ | {r['row']} | {r['seconds']:.1f} | {r['peak_rss'] / 2**30:.2f} | {r['notes']} |")
    print()
    for size in sizes:
        read, seg = by.get((size, "zarr read (level 0)")), by.get((size, "segment-volume"))
        if read and seg:
            print(f"{size}³: segment-volume / zarr read = {seg['seconds'] / read['seconds']:.2f} (target <= 3)")
        pipe = by.get((size, "forest + tokens + mask"))
        if pipe:
            print(f"{size}³: forest + tokens + mask peak RSS {pipe['peak_rss'] / 2**30:.2f} GiB (target <= 1.5)")
    small, large = min(sizes), max(sizes)
    a, b = by.get((small, "forest + tokens + mask")), by.get((large, "forest + tokens + mask"))
    if a and b and small != large:
        print(f"peak RSS growth {small}³ -> {large}³: {b['peak_rss'] / a['peak_rss']:.2f}x (target <= 1.3)")


if __name__ == "__main__":
    main()
