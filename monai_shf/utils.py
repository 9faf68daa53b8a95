"""Small shared helpers."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["atomic_write", "find_real_data", "foreground_dice"]


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


def find_real_data(name: str, files: tuple[str, ...]) -> Path | None:
    """The real-data folder ``name`` (e.g. ``"nuclei2d"``) holding every one of ``files``:
    ``$MONAI_SHF_DATA/<name>``, else ``shared/data/<name>`` beside the repository or beside the current
    directory; None when absent (callers fall back to generated data or skip)."""
    candidates = []
    if os.environ.get("MONAI_SHF_DATA"):
        candidates.append(Path(os.environ["MONAI_SHF_DATA"]) / name)
    repo = Path(__file__).resolve().parents[1]
    candidates += [repo.parent / "shared" / "data" / name, Path.cwd().parent / "shared" / "data" / name]
    for folder in candidates:
        if all((folder / f).is_file() for f in files):
            return folder
    return None


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
