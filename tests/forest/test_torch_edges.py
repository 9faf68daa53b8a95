"""Torch soft edges (``monai_shf.forest.torch_edges``): the numpy/OpenCV map up to the stated rounding bound."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_shf.forest import soft_edge_map, soft_edge_maps, to_uint8
from monai_shf.forest.torch_edges import SOFT_EDGE_TOLERANCE, _to_uint8, soft_edge_map_torch

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

# fraction of pixels allowed to differ (by at most SOFT_EDGE_TOLERANCE); measured: below 1e-3 on small
# random images, below 3e-5 on the real nuclei and MNI152 images
_RANDOM_FRACTION = 5e-3
_REAL_FRACTION = 1e-4


def _image(shape: tuple[int, ...], dtype: type, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype is bool:
        return rng.random(shape) < 0.5
    smooth = rng.random(shape) * 300 - (40 if dtype in (np.int16, np.float64) else 0)
    return smooth.astype(dtype)


def _compare(numpy_map: np.ndarray, torch_map: torch.Tensor, fraction: float) -> None:
    assert torch_map.dtype == torch.uint8 and tuple(torch_map.shape) == numpy_map.shape
    diff = np.abs(numpy_map.astype(np.int16) - torch_map.cpu().numpy().astype(np.int16))
    assert diff.max() <= SOFT_EDGE_TOLERANCE
    assert np.count_nonzero(diff) <= fraction * diff.size


@pytest.mark.parametrize(
    "shape",
    [(1, 64, 64), (3, 50, 37), (2, 5, 300), (1, 1, 7), (4, 30, 30), (1, 16, 16, 16), (2, 20, 17, 9), (1, 2, 1, 5)],
)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64, np.int16, np.uint16, bool])
def test_soft_edges_match_the_numpy_map(shape, dtype):
    batch = np.stack([_image(shape, dtype, seed) for seed in range(2)])
    for k in (1, 3, 5, 7):
        for reduction in ("max", "mean"):
            for thresholds in ((50, 100), (10, 30)):
                got = soft_edge_maps(torch.from_numpy(batch), k, thresholds, reduction)
                for b in range(2):
                    _compare(soft_edge_map(batch[b], k, thresholds, reduction), got[b], _RANDOM_FRACTION)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64, np.int16, np.uint16, bool])
def test_8_bit_conversion_is_exact(dtype):
    batch = np.stack([_image((2, 33, 21), dtype, seed) for seed in range(3)])
    got = _to_uint8(torch.from_numpy(batch)).numpy()
    for b in range(3):
        np.testing.assert_array_equal(got[b], to_uint8(batch[b]))


def test_constant_image_has_no_edges_and_input_is_untouched():
    image = torch.full((1, 2, 20, 20), 7.5)
    before = image.clone()
    assert not soft_edge_maps(image).any()
    assert torch.equal(image, before)


def test_one_image():
    image = _image((3, 40, 24), np.uint8, 4)
    _compare(soft_edge_map(image), soft_edge_map_torch(torch.from_numpy(image)), _RANDOM_FRACTION)


def test_cpu_tensors_keep_the_numpy_path():
    image = _image((1, 40, 24), np.float32, 5)
    got = soft_edge_map(torch.from_numpy(image))
    np.testing.assert_array_equal(got.numpy(), soft_edge_map(image))


@pytest.mark.parametrize(
    ("images", "kwargs", "error", "match"),
    [
        (np.zeros((1, 1, 8, 8)), {}, TypeError, "torch tensor"),
        (torch.zeros(1, 8, 8), {}, ValueError, "B, C, H, W"),
        (torch.zeros(1, 0, 8, 8), {}, ValueError, "empty"),
        (torch.full((1, 1, 8, 8), float("inf")), {}, ValueError, "finite"),
        (torch.zeros(1, 1, 8, 8), {"kernel_size": 4}, ValueError, "kernel_size"),
        (torch.zeros(1, 1, 8, 8), {"channel_reduction": "sum"}, ValueError, "channel_reduction"),
    ],
)
def test_bad_input(images, kwargs, error, match):
    with pytest.raises(error, match=match):
        soft_edge_maps(images, **kwargs)


def test_real_nuclei_soft_edges(nuclei2d):
    image = nuclei2d[0][None]
    for k in (1, 3, 5, 7):
        _compare(soft_edge_map(image, k), soft_edge_maps(torch.from_numpy(image[None]), k)[0], _REAL_FRACTION)


def test_real_mni152_soft_edges(mni152_dir):
    nib = pytest.importorskip("nibabel")
    path = mni152_dir / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    volume = nib.load(str(path)).get_fdata(dtype=np.float32)[None]
    for k in (3, 5):
        _compare(soft_edge_map(volume, k), soft_edge_maps(torch.from_numpy(volume[None]), k)[0], _REAL_FRACTION)


@CUDA
def test_cuda_soft_edges_stay_on_the_device():
    image = torch.from_numpy(_image((3, 64, 48), np.float32, 6))
    got = soft_edge_map(image.cuda())
    assert got.is_cuda
    _compare(soft_edge_map(image.numpy()), got, _RANDOM_FRACTION)
