"""monai_shf.validation: the argument checks shared by every package."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from monai_shf.validation import check_array, check_choice, check_finite, check_int, to_numpy


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_finite_values_near_the_maximum_are_not_reported(dtype, as_tensor):
    """Sums of huge finite values overflow; only the exact test may decide."""
    x = np.full((64, 64), np.finfo(dtype).max, dtype=dtype)
    x[::2] = -np.finfo(dtype).max / 3
    value = torch.from_numpy(x) if as_tensor else x
    check_finite(value, "x")  # no error
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[40, 3] = bad
        with pytest.raises(ValueError, match="y contains NaN or infinite"):
            check_finite(torch.from_numpy(y) if as_tensor else y, "y")


def test_check_finite_on_half_precision_tensors_and_integers():
    x = torch.full((100, 100), 60000.0, dtype=torch.float16)
    check_finite(x, "x")
    check_finite(x.to(torch.bfloat16), "x")
    x[5, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        check_finite(x.to(torch.bfloat16), "x")
    check_finite(np.full((4, 4), np.iinfo(np.int64).max), "ints")  # integers are always finite


def test_to_numpy_of_bfloat16_is_an_exact_float32_copy():
    """Numpy has no bfloat16; torch raised "unsupported ScalarType"."""
    x = torch.tensor([1.5, -3.0, 2.0**100], dtype=torch.bfloat16)
    y = to_numpy(x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, x.float().numpy())
    a = np.arange(4)
    assert to_numpy(a) is a or np.shares_memory(to_numpy(a), a)


def test_check_array_and_scalars():
    with pytest.raises(TypeError, match="img must be a numpy array"):
        check_array([1, 2], "img", ndims=(1,))
    with pytest.raises(ValueError, match="img must have 2 or 3 dimensions"):
        check_array(np.zeros(4), "img", ndims=(2, 3))
    with pytest.raises(ValueError, match="must not be empty"):
        check_array(np.zeros((0, 3)), "img", ndims=(2,))
    with pytest.raises(TypeError, match="dtype"):
        check_array(np.zeros((2, 2), complex), "img", ndims=(2,))
    check_array(torch.zeros(2, 2, dtype=torch.bfloat16), "img", ndims=(2,))
    assert check_int(np.int16(3), "n", 1) == 3
    with pytest.raises(TypeError, match="n must be an integer"):
        check_int(3.0, "n")
    with pytest.raises(ValueError, match="n must be >= 1"):
        check_int(0, "n", 1)
    with pytest.raises(ValueError, match="mode must be one of"):
        check_choice("cubic", "mode", ("linear", "nearest"))


def test_an_output_is_never_an_input(tmp_path):
    from monai_shf.validation import check_not_input

    source = tmp_path / "slide.tif"
    source.write_bytes(b"data")
    (tmp_path / "link.tif").symlink_to(source)
    os.link(source, tmp_path / "hard.tif")
    for same in (source, tmp_path / "link.tif", tmp_path / "hard.tif", tmp_path / "sub" / ".." / "slide.tif"):
        with pytest.raises(ValueError, match="out .* is the input .*slide.tif"):
            check_not_input(same, [None, source], "out")
    check_not_input(tmp_path / "mask.tif", source, "out")
    check_not_input(tmp_path / "new.tif", [tmp_path / "other.tif", 3, None], "out")
    with pytest.raises(ValueError, match="is the input"):  # neither exists yet: the same name
        check_not_input(tmp_path / "a.tif", tmp_path / "x" / ".." / "a.tif", "out")


def test_meta_device_tensors_name_the_parameter():
    x = torch.zeros(2, 3, device="meta")
    with pytest.raises(ValueError, match="pred is a tensor on the 'meta' device .*\\(2, 3\\)"):
        check_array(x, "pred", ndims=(2,))
    with pytest.raises(ValueError, match="'meta' device"):
        to_numpy(x)
