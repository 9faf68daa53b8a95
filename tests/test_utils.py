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
