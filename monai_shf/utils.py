"""Small shared helpers."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["DATA_ENV", "atomic_write", "find_real_data", "foreground_dice", "peak_rss_bytes"]


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Write ``path`` through a unique temporary file in the same folder, synced to disk and then
    renamed over it (``os.replace`` is atomic on POSIX): readers and concurrent writers (e.g. the
    ranks of a distributed run) see the old file or the new one, never part of one; a crash leaves
    the old file and no temporary behind.

    ``write(tmp_path)`` writes the content; the file gets the usual permissions (mkstemp's are 0600).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix="".join(path.suffixes), dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


DATA_ENV = "MONAI_SHF_DATA"
"""The environment variable naming the real-data root (folders such as ``nuclei2d/``, ``ihc2d/``)."""


def find_real_data(name: str, files: tuple[str, ...], root: str | os.PathLike | None = None) -> Path | None:
    """The real-data folder ``<root>/<name>`` holding every one of ``files``, the one place that
    resolves it: ``root`` when given, else ``$MONAI_SHF_DATA``; ``None`` when neither is set or the
    folder lacks a file, and callers then use the package's own generated data (or skip).

    Raises:
        ValueError: an explicit ``root`` whose ``name`` folder lacks one of ``files`` (a user's path is
            never silently replaced by generated data).
    """
    base = root if root is not None else os.environ.get(DATA_ENV) or None
    if base is None:
        return None
    folder = Path(base) / name
    missing = [f for f in files if not (folder / f).is_file()]
    if missing and root is not None:
        raise ValueError(f"root {os.fspath(root)!r}: {folder} lacks {missing}.")
    return None if missing else folder


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far, in bytes (``getrusage``: Linux reports KiB,
    macOS bytes); ``-1`` where the ``resource`` module does not exist (Windows)."""
    try:
        import resource
    except ImportError:
        return -1
    peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return peak if sys.platform == "darwin" else peak * 1024


def foreground_dice(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> float:
    """Mean Dice over the foreground classes ``1..num_classes-1`` present in ``truth``, as MONAI's
    ``MeanDice(include_background=False)`` (a class absent from ``truth`` is skipped); NaN when none
    is present. ``pred`` and ``truth``: integer class maps of one shape."""
    scores = []
    for c in range(1, num_classes):
        p, t = np.asarray(pred == c), np.asarray(truth == c)
        if t.any():
            scores.append(2.0 * np.count_nonzero(p & t) / (np.count_nonzero(p) + np.count_nonzero(t)))
    return float(np.mean(scores)) if scores else float("nan")
