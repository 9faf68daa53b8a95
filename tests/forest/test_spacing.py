"""monai_shf.forest.spacing: spacing checks, relative spacing, root limits and the per-depth split axes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_shf.forest.spacing import SPACING_RTOL, check_spacing, physical_root_limits, relative_spacing, split_schedule


def test_check_spacing_accepts_sequences_arrays_and_tensors():
    assert check_spacing(None, 3) is None
    assert check_spacing([1, 2, 5], 3) == (1.0, 2.0, 5.0)
    assert check_spacing(np.array([0.5, 0.5]), 2) == (0.5, 0.5)
    assert check_spacing(torch.tensor([1.0, 1.0, 2.5], dtype=torch.float64), 3) == (1.0, 1.0, 2.5)


@pytest.mark.parametrize(
    "spacing,error",
    [
        ((1.0, 0.0), ValueError),
        ((1.0, -1.0), ValueError),
        ((1.0, float("nan")), ValueError),
        ((1.0, float("inf")), ValueError),
        ((1.0,), ValueError),
        ((1.0, 1.0, 1.0), ValueError),
        ("11", TypeError),
        ((1.0, None), TypeError),
        ((True, 1.0), TypeError),
        (2.0, TypeError),
    ],
)
def test_bad_spacing_names_it(spacing, error):
    with pytest.raises(error, match="spacing"):
        check_spacing(spacing, 2)


def test_relative_spacing_is_none_when_isotropic():
    assert relative_spacing(None, 3) is None
    assert relative_spacing((2.0, 2.0, 2.0), 3) is None
    assert relative_spacing((1.0, 1.0 + SPACING_RTOL / 2, 1.0), 3) is None  # float32-affine noise
    assert relative_spacing((0.5, 0.5, 3.0), 3) == (1.0, 1.0, 6.0)
    assert relative_spacing((2.0, 1.0), 2) == (2.0, 1.0)


def test_physical_root_limits_are_near_cubic_in_millimetres():
    # 256 x 256 x 40 voxels at 1 x 1 x 5 mm: 256 x 256 x 200 mm, one root
    assert physical_root_limits((256, 256, 40), 2, (1.0, 1.0, 5.0)) == [1, 1, 1]
    # 64 x 64 x 64 at 1 x 1 x 4: 64 x 64 x 256 mm, four roots along the thick axis
    assert physical_root_limits((64, 64, 64), 2, (1.0, 1.0, 4.0)) == [1, 1, 4]
    # never roots under min_size voxels: 3 fine voxels make a 3 mm side, the thick axis 5 voxels
    assert physical_root_limits((3, 10), 2, (1.0, 5.0)) == [1, 5]


def test_split_schedule():
    # isotropic: every axis at every depth, until the first axis runs out
    assert split_schedule([3, 5], (64, 256), (1, 4), None) == [(0, 1)] * 3
    # 64 x 64 x 16 voxels at 1 x 1 x 5 (64 x 64 x 80 mm, one root): all three axes while the slice axis
    # can be halved (16 -> 2: three times), then the in-plane axes alone
    assert split_schedule([5, 5, 3], (64, 64, 16), (1, 1, 1), (1.0, 1.0, 5.0)) == [(0, 1, 2)] * 3 + [(0, 1)] * 2
    # a root twice as long along the thick axis (64 x 64 x 128 mm): that axis alone first
    assert split_schedule([5, 5, 5], (64, 64, 32), (1, 1, 1), (1.0, 1.0, 4.0))[:2] == [(2,), (0, 1, 2)]
    # extents 100 and 150 mm: both (150 < 2 * 100)
    assert split_schedule([4, 4], (100, 50), (1, 1), (1.0, 3.0))[0] == (0, 1)
