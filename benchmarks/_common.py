"""Helpers shared by the benchmark scripts: timing, peak memory, the seed reference, real data."""

from __future__ import annotations

import gc
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"


def best_time(fn: Callable[[], Any], repeat: int = 3, warmup: int = 1) -> float:
    """Best wall time in seconds over ``repeat`` runs after ``warmup`` runs (this machine is shared
    and noisy: the minimum is the most repeatable statistic)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def peak_extra_bytes(fn: Callable[[], Any]) -> int | None:
    """Peak resident memory above the level before ``fn`` ran (its result included), from the
    kernel's high-water mark reset through /proc/self/clear_refs; None where that is not allowed."""
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    base = _status("VmRSS")
    result = fn()
    peak = _status("VmHWM")
    del result
    gc.collect()
    return max(0, peak - base)


def load_seed():
    """The seed transcription (shared/reference/seed_shf.py): a baseline, never a dependency."""
    path = SHARED / "reference" / "seed_shf.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("seed_shf", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["seed_shf"] = module
    spec.loader.exec_module(module)
    return module


def nuclei2d() -> tuple[np.ndarray, np.ndarray]:
    import tifffile

    folder = DATA / "nuclei2d"
    if not folder.exists():
        raise SystemExit(f"real data not found at {folder}: benchmarks run on shared/data")
    return tifffile.imread(folder / "img2d.tif"), tifffile.imread(folder / "mask2d.tif")


def mni152() -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    folder = DATA / "mni152"
    if not folder.exists():
        raise SystemExit(f"real data not found at {folder}: benchmarks run on shared/data")
    t1 = nib.load(str(folder / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")).get_fdata(dtype=np.float32)
    gm = nib.load(str(folder / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz")).get_fdata(dtype=np.float32)
    return t1, gm


def table(rows: list[dict], columns: list[str]) -> str:
    """A GitHub-markdown table of ``rows`` restricted to ``columns``."""
    text = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(columns)]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(t[i].ljust(w) for i, w in enumerate(widths)) + " |" for t in text]
    return "\n".join(lines)
