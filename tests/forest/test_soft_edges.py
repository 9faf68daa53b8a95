"""Soft edges (``monai_shf.forest.soft_edge_map`` / ``soft_edge_bands``): values, bands, dimensions, inputs."""

from __future__ import annotations

import cv2 as cv
import numpy as np
import pytest
import torch

from monai_shf.forest import (
    build_forest,
    deserialize,
    edge_map,
    serialize,
    soft_edge_bands,
    soft_edge_map,
    to_uint8,
)


def _rows(x: np.ndarray, calls: list | None = None):
    def read(start: int, stop: int) -> np.ndarray:
        if calls is not None:
            calls.append((start, stop))
        return x[:, start:stop]

    return read


def _whole_2d(grey: np.ndarray, k: int, low: float) -> np.ndarray:
    """The definition, written out for one 2D uint8 plane: OpenCV Gaussian, central differences (0 at
    the border), ``round(255 * min(|grad| / (low / 8), 1))``."""
    blurred = cv.GaussianBlur(grey.astype(np.float32), (k, k), 0.3 * ((k - 1) * 0.5 - 1) + 0.8) if k > 1 else grey
    blurred = blurred.astype(np.float64)
    gy, gx = np.zeros_like(blurred), np.zeros_like(blurred)
    gy[1:-1] = (blurred[2:] - blurred[:-2]) / 2
    gx[:, 1:-1] = (blurred[:, 2:] - blurred[:, :-2]) / 2
    return np.rint(np.minimum(np.hypot(gy, gx) / (low / 8), 1) * 255).astype(np.uint8)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_matches_the_definition(k):
    rng = np.random.default_rng(k)
    grey = cv.GaussianBlur(rng.integers(0, 256, (70, 90), dtype=np.uint8), (0, 0), 2.0)
    out = soft_edge_map(grey[None], k, (40, 80))
    assert out.dtype == np.uint8 and out.shape == (70, 90)
    diff = np.abs(out.astype(int) - _whole_2d(grey, k, 40.0))
    assert diff.max() <= 1 and np.count_nonzero(diff) < 0.01 * diff.size  # float32 vs float64 rounding


def test_flat_ramp_and_step():
    flat = np.full((1, 32, 32), 77, np.uint8)
    assert not soft_edge_map(flat).any()
    # a ramp of 2 grey levels per pixel: 2 / (50 / 8) of one edge pixel, inside (blur keeps a linear ramp)
    ramp = np.tile(np.arange(0, 64, 2, dtype=np.uint8), (32, 1))[None]
    inner = soft_edge_map(ramp)[4:-4, 4:-4]
    assert (inner == round(255 * 2 / 6.25)).all()
    # a strong step saturates; a weaker one counts in proportion (never 0 where Canny would see nothing)
    step = np.zeros((1, 32, 32), np.uint8)
    step[:, :, 16:] = 200
    assert soft_edge_map(step)[:, 15:17].min() == 255
    faint = np.zeros((1, 32, 32), np.uint8)
    faint[:, :, 16:] = 8  # below Canny's (50, 100): no Canny edge at all
    assert not edge_map(faint).any()
    weak = soft_edge_map(faint)[:, 15:17]
    assert 0 < weak.min() and weak.max() < 255


@pytest.mark.parametrize("shape", [(3, 97, 61), (1, 23, 19, 17), (2, 1, 40), (1, 5, 1, 1)])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_bands_equal_the_whole_image(shape, k):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    whole = soft_edge_bands(_rows(x), shape[1:], k, band_rows=shape[1])
    for band in (1, 2, 7):
        np.testing.assert_array_equal(soft_edge_bands(_rows(x), shape[1:], k, band_rows=band), whole)
    np.testing.assert_array_equal(soft_edge_map(x, k), whole)


def test_bands_read_each_band_with_its_halo_only():
    x = np.random.default_rng(1).integers(0, 256, (1, 50, 30), dtype=np.uint8)
    calls: list = []
    out = np.full((50, 30), 7, np.uint8)
    result = soft_edge_bands(_rows(x, calls), (50, 30), 5, band_rows=10, out=out)
    assert result is out
    halo = 5 // 2 + 1
    assert calls == [(max(0, s - halo), min(50, s + 10 + halo)) for s in range(0, 50, 10)]


def test_channels_max_and_mean():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (3, 40, 40), dtype=np.uint8)
    per_channel = [soft_edge_map(rgb[c : c + 1]) for c in range(3)]
    np.testing.assert_array_equal(soft_edge_map(rgb), np.maximum.reduce(per_channel))
    mean = np.rint(rgb.astype(np.float64).mean(axis=0)).astype(np.uint8)
    np.testing.assert_array_equal(soft_edge_map(rgb, channel_reduction="mean"), soft_edge_map(mean[None]))


@pytest.mark.parametrize("dtype,scale", [(np.uint16, 300), (np.float32, 0.01), (np.float64, -5.0)])
def test_any_dtype_is_min_max_scaled_like_edge_map(dtype, scale):
    rng = np.random.default_rng(3)
    x = (rng.random((1, 30, 40)) * 100).astype(dtype) * dtype(scale)
    np.testing.assert_array_equal(soft_edge_map(x), soft_edge_map(to_uint8(x)))


def test_3d_surface_of_a_ball():
    zz, yy, xx = np.mgrid[:24, :24, :24]
    ball = (((zz - 12) ** 2 + (yy - 12) ** 2 + (xx - 12) ** 2) < 64).astype(np.float32)[None]
    out = soft_edge_map(ball)
    assert out.shape == (24, 24, 24) and out.dtype == np.uint8
    assert out[12, 12, 12] == 0 and out[0, 0, 0] == 0 and out[12, 12, 4] == 255


def test_tensor_input_and_input_untouched():
    x = torch.rand(3, 33, 35)
    before = x.clone()
    out = soft_edge_map(x)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.uint8 and out.device == x.device
    assert torch.equal(x, before)
    np.testing.assert_array_equal(out.numpy(), soft_edge_map(x.numpy()))


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"read_rows": 3}, TypeError, "read_rows must be a callable"),
        ({"shape": (4,)}, TypeError, "shape must be"),
        ({"kernel_size": 4}, ValueError, "kernel_size must be odd"),
        ({"thresholds": (9, 3)}, ValueError, "thresholds"),
        ({"channel_reduction": "min"}, ValueError, "channel_reduction"),
        ({"band_rows": 0}, ValueError, "band_rows"),
        ({"out": np.zeros((8, 8), bool)}, ValueError, "out must be a uint8"),
        ({"read_rows": lambda a, b: np.zeros((1, b - a, 8), np.float32)}, TypeError, "uint8 numpy array"),
        ({"read_rows": lambda a, b: [0]}, TypeError, "uint8 numpy array"),
        ({"read_rows": lambda a, b: np.zeros((1, b - a, 9), np.uint8)}, ValueError, r"must return shape \(C, \d+, 8\)"),
        ({"read_rows": lambda a, b: np.zeros((0, b - a, 8), np.uint8)}, ValueError, "must return shape"),
        (
            {"read_rows": lambda a, b: np.zeros((1 + (a > 0), b - a, 8), np.uint8), "band_rows": 2},
            ValueError,
            r"must return shape \(1, ",
        ),
    ],
)
def test_bands_bad_input(kwargs, error, match):
    args = {"read_rows": _rows(np.zeros((1, 8, 8), np.uint8)), "shape": (8, 8), **kwargs}
    with pytest.raises(error, match=match):
        soft_edge_bands(**args)


def test_map_bad_input():
    with pytest.raises(ValueError, match="image"):
        soft_edge_map(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="kernel_size"):
        soft_edge_map(np.zeros((1, 8, 8)), kernel_size=2)


def _upper_bound(label: np.ndarray, forest, p: int) -> float:
    tokens = serialize(label[None], forest, p, mode="fraction", num_classes=2)
    rebuilt = deserialize(tokens, forest, mode="linear").argmax(axis=0).astype(bool)
    truth = label.astype(bool)
    return 2.0 * np.count_nonzero(rebuilt & truth) / (np.count_nonzero(rebuilt) + np.count_nonzero(truth))


def test_soft_edges_recover_the_faint_nuclei_canny_misses(nuclei2d):
    """Canny (50, 100) misses faint nuclei, so its forests fall below a uniform
    grid; the default (soft edges, criterion="error") is never below max(paper, uniform) - 0.002."""
    image, mask = nuclei2d
    label = (mask > 0).astype(np.uint8)
    p = 8
    soft, canny = soft_edge_map(image[None]), edge_map(image[None])
    for length in (1024, 2050):
        default = _upper_bound(label, build_forest(soft, length, patch_size=p), p)
        paper = _upper_bound(label, build_forest(canny, length, criterion="edges"), p)
        uniform = _upper_bound(label, build_forest(np.zeros_like(canny), length), p)
        assert default >= max(paper, uniform) - 0.002, (length, default, paper, uniform)
    # Canny + "error" (the previous default) is below the uniform grid at L = 1024
    canny_error = _upper_bound(label, build_forest(canny, 1024, patch_size=p), p)
    assert canny_error < _upper_bound(label, build_forest(np.zeros_like(canny), 1024), p) - 0.002
