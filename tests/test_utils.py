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
