"""monai_shf.utils: atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from monai_shf.utils import atomic_write


def test_atomic_write_replaces_or_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.nii.gz"
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(b"old"))
    assert target.read_bytes() == b"old"

    def crash(tmp):
        Path(tmp).write_bytes(b"ne")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, crash)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.nii.gz"]
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(b"new"))
    assert target.read_bytes() == b"new"


def test_foreground_dice_skips_classes_absent_from_the_truth():
    import numpy as np

    from monai_shf.utils import foreground_dice

    truth = np.array([[0, 1, 1, 2]])
    pred = np.array([[0, 1, 2, 2]])
    # class 1: 2 * 1 / (1 + 2); class 2: 2 * 1 / (2 + 1); class 3 absent from the truth: skipped
    assert foreground_dice(pred, truth, 4) == 2 / 3
    assert np.isnan(foreground_dice(pred, np.zeros_like(truth), 3))


def test_file_stem_drops_only_the_format_suffix():
    from monai_shf.utils import file_stem

    assert file_stem("a/case.v1.tif") == "case.v1"
    assert file_stem("case.v2.svs") == "case.v2"
    assert file_stem("/x/img.nii.gz") == "img" and file_stem("b.OME.TIF") == "b" and file_stem("c.ome.tiff") == "c"
    assert file_stem(Path("plain")) == "plain" and file_stem(".nii.gz") == ".nii"


def _terminated_mid_write(folder: Path, script: str) -> int:
    """Run ``script`` (which writes into ``folder`` slowly), send SIGTERM once a temporary file of
    the write exists, and return the exit status."""
    import signal
    import subprocess
    import sys
    import time

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.startswith(".") for p in folder.iterdir()):
            assert proc.poll() is None and time.monotonic() < deadline, "the write never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_mid_write_leaves_no_temporary(tmp_path):
    script = (
        "import time\n"
        "from pathlib import Path\n"
        "from monai_shf.utils import atomic_write\n"
        "def slow(tmp):\n"
        "    Path(tmp).write_bytes(b'partial')\n"
        "    time.sleep(60)\n"
        f"atomic_write({str(tmp_path / 'out.bin')!r}, slow)\n"
    )
    assert _terminated_mid_write(tmp_path, script) == 128 + 15
    assert list(tmp_path.iterdir()) == []


def test_terminate_as_exit_keeps_a_handler_of_the_application():
    import signal

    from monai_shf.utils import terminate_as_exit

    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    with terminate_as_exit():
        assert signal.getsignal(signal.SIGTERM) != signal.SIG_DFL
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    mine = lambda signum, frame: None  # noqa: E731
    signal.signal(signal.SIGTERM, mine)
    try:
        with terminate_as_exit():
            assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
