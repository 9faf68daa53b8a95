"""Fixtures of the slide tests (the helpers that write test slides are in slide_files.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from slide_files import area_pyramid, texture, write_tiff_pyramid


@pytest.fixture(scope="session")
def rgb_image() -> np.ndarray:
    return texture(512, 768)


@pytest.fixture(scope="session")
def exact_slide(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """A 512 x 1024 RGB slide (two square roots: power-of-two square leaves) whose 6 levels are exact
    2x area means, 64-px tiles (flat IFD chain, deflate)."""
    levels = area_pyramid(texture(512, 1024, seed=1), 6)
    path = write_tiff_pyramid(tmp_path_factory.mktemp("slides") / "exact.tif", levels, tile=64, mpp=0.5)
    return path, levels
