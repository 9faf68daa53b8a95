"""Small shared helpers."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

__all__ = [
    "DATA_ENV",
    "atomic_write",
    "file_stem",
    "find_real_data",
    "foreground_dice",
    "peak_rss_bytes",
    "terminate_as_exit",
]

# names whose last two suffixes are one format: their stem drops both
_DOUBLE_SUFFIXES = (".nii.gz", ".ome.tif", ".ome.tiff", ".ome.zarr")


def file_stem(path: str | os.PathLike) -> str:
    """The file name without its format suffix: only the last suffix (``case.v1.tif`` -> ``case.v1``),
    or the last two for the formats that take two (``.nii.gz``, ``.ome.tif``, ``.ome.tiff``,
    ``.ome.zarr``: ``a.ome.tif`` -> ``a``). So two inputs of different names never share a stem."""
    name = Path(path).name
    lower = name.lower()
    for suffix in _DOUBLE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


@contextlib.contextmanager
def terminate_as_exit() -> Iterator[None]:
    """Within the block, SIGTERM (how SLURM, Kubernetes and ``kill`` stop a job) raises
    ``SystemExit(128 + SIGTERM)`` in the main thread instead of killing the process outright, so that
    ``finally`` blocks run and writers remove their temporary files. Only where SIGTERM still has its
    default action and only in the main thread (elsewhere, e.g. when the application installed its
    own handler, nothing changes); the previous handler is restored on exit."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Write ``path`` through a unique temporary file in the same folder, synced to disk and then
    renamed over it (``os.replace`` is atomic on POSIX): readers and concurrent writers (e.g. the
    ranks of a distributed run) see the old file or the new one, never part of one; a crash leaves
    the old file and no temporary behind.

    ``write(tmp_path)`` writes the content; the file gets the usual permissions (mkstemp's are 0600).
    A SIGTERM during the write removes the temporary too (:func:`terminate_as_exit`); only an
    uncatchable SIGKILL or a power loss can leave one (a hidden ``.<name>.*`` file in the folder).
    """
    path = Path(path)
    with terminate_as_exit():
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
