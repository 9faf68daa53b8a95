"""Helpers shared by the benchmark scripts: timing, peak memory, the seed reference, real data."""

from __future__ import annotations

import gc
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"
if DATA.is_dir():  # the library finds real data through $MONAI_SHF_DATA only
    os.environ.setdefault("MONAI_SHF_DATA", str(DATA))


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


def memory_status(field: str) -> int:
    """Bytes of a ``/proc/self/status`` memory field (``"VmRSS"``, ``"VmHWM"``); 0 where absent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def reset_peak_memory() -> bool:
    """Reset the kernel's resident high-water mark (``VmHWM``) through /proc/self/clear_refs;
    False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_extra_bytes(fn: Callable[[], Any]) -> int | None:
    """Peak resident memory above the level before ``fn`` ran (its result included), from the
    kernel's high-water mark reset through /proc/self/clear_refs; None where that is not allowed."""
    gc.collect()
    if not reset_peak_memory():
        return None
    base = memory_status("VmRSS")
    result = fn()
    peak = memory_status("VmHWM")
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


def ihc2d_rgb() -> np.ndarray:
    """The real IHC tissue image ``shared/data/ihc2d/ihc.png`` as ``(512, 512, 3)`` uint8 RGB."""
    import cv2 as cv

    path = DATA / "ihc2d" / "ihc.png"
    if not path.exists():
        raise SystemExit(f"real data not found at {path}: benchmarks run on shared/data")
    return cv.cvtColor(cv.imread(str(path), cv.IMREAD_COLOR), cv.COLOR_BGR2RGB)


def ihc2d_tiled(side: int) -> np.ndarray:
    """Texture-rich tissue at any size: ihc2d tiled 4 x 4 and resized (bilinear) to ``(side, side, 3)`` uint8."""
    import cv2 as cv

    return cv.resize(np.tile(ihc2d_rgb(), (4, 4, 1)), (side, side), interpolation=cv.INTER_LINEAR)


def mni152_tissue() -> tuple[np.ndarray, np.ndarray]:
    """T1 ``(1, 197, 233, 189)`` float32 and the 3-class tissue label (0 other, 1 GM, 2 WM; the
    probability maps > 127, WM wins where both are), uint8."""
    import nibabel as nib

    folder = DATA / "mni152"
    if not folder.exists():
        raise SystemExit(f"real data not found at {folder}: benchmarks run on shared/data")

    def load(name: str) -> np.ndarray:
        return nib.load(str(folder / f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz")).get_fdata(
            dtype=np.float32
        )

    t1, gm, wm = load("t1"), load("gm"), load("wm")
    label = np.zeros(t1.shape, dtype=np.uint8)
    label[gm > 127] = 1
    label[wm > 127] = 2
    return t1[None], label


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
