"""Shared fixtures: real data from ../shared/data (skipped with a reason where absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# the library finds real data only through $MONAI_SHF_DATA (or an explicit root); the tests point it at
# the shared/ folder beside the repository unless the caller set it
if DATA.is_dir():
    os.environ.setdefault("MONAI_SHF_DATA", str(DATA))


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (the shared/ folder beside the repository)")
    return path


@pytest.fixture(scope="session")
def nuclei2d() -> tuple[np.ndarray, np.ndarray]:
    """(image uint16 (512, 512), instance mask uint16 (512, 512)) of the 2018 DSB nuclei sample."""
    import tifffile

    folder = _need(DATA / "nuclei2d")
    return tifffile.imread(folder / "img2d.tif"), tifffile.imread(folder / "mask2d.tif")


@pytest.fixture(scope="session")
def mni152_dir() -> Path:
    return _need(DATA / "mni152")


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
