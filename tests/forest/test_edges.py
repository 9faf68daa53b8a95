"""monai_shf.forest.edges: edge maps of any dtype, range and channel count, 2D and 3D."""

from __future__ import annotations

import cv2 as cv
import numpy as np
import pytest
import torch

from monai_shf.forest import edge_map, to_uint8


def _disc(shape=(64, 64), radius=20, value=200):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (((yy - shape[0] // 2) ** 2 + (xx - shape[1] // 2) ** 2) < radius**2) * value


def test_matches_opencv_blur_and_canny():
    img = _disc().astype(np.uint8)
    expected = cv.Canny(cv.GaussianBlur(img, (5, 5), 0), 60, 110) > 0
    got = edge_map(img[None], kernel_size=5, thresholds=(60, 110))
    assert got.dtype == bool and got.shape == (64, 64)
    np.testing.assert_array_equal(got, expected)
    assert got.sum() > 0


@pytest.mark.parametrize("dtype,scale", [(np.uint16, 300), (np.float32, 0.01), (np.float64, -5.0), (np.int32, 7)])
def test_any_dtype_and_range_is_min_max_normalised(dtype, scale):
    img = (_disc(value=1) * scale).astype(dtype)
    ref = edge_map((_disc(value=1) * 255).astype(np.uint8)[None])
    np.testing.assert_array_equal(edge_map(img[None]), ref)


def test_bool_constant_and_zero_images():
    disc = _disc(value=1).astype(bool)
    assert edge_map(disc[None]).sum() > 0
    assert edge_map(np.zeros((1, 32, 32))).sum() == 0
    assert edge_map(np.full((1, 32, 32), 9.5)).sum() == 0


def test_channels():
    disc = _disc().astype(np.uint8)
    rgb = np.stack([disc, np.zeros_like(disc), np.zeros_like(disc)])
    assert edge_map(rgb).sum() > 0, "max over channels must see an edge present in one channel only"
    assert edge_map(rgb[:2]).sum() > 0
    assert edge_map(np.concatenate([rgb, rgb])).shape == (64, 64)
    assert edge_map(rgb, channel_reduction="mean").sum() > 0


def test_torch_input_and_input_untouched():
    img = torch.from_numpy(_disc().astype(np.float32))[None]
    before = img.clone()
    out = edge_map(img)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.bool and out.shape == (64, 64)
    assert torch.equal(img, before)


def _ball(side=24, radius=8):
    zz, yy, xx = np.mgrid[:side, :side, :side] - side // 2
    return ((zz**2 + yy**2 + xx**2) < radius**2).astype(np.float32) * 100


@pytest.mark.parametrize("method", ["itk", "slicewise"])
def test_3d_edges_lie_on_the_surface(method):
    ball = _ball()
    edges = edge_map(ball[None], kernel_size=3, thresholds=(50, 100), method=method)
    assert edges.shape == ball.shape and edges.dtype == bool
    zz, yy, xx = np.nonzero(edges)
    r = np.sqrt((zz - 12) ** 2 + (yy - 12) ** 2 + (xx - 12) ** 2)
    assert len(r) > 50
    assert np.abs(r - 8).max() < 2.5, "edges away from the ball's surface"
    # every orientation: edges on the top/bottom caps as well as the sides
    assert edges[:, 12, 12].any() and edges[12, 12, :].any()


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(image=np.zeros((1, 8, 8)), kernel_size=4), ValueError, "odd"),
        (dict(image=np.zeros((1, 8, 8)), kernel_size=0), ValueError, "kernel_size"),
        (dict(image=np.zeros((1, 8, 8)), kernel_size=3.0), TypeError, "kernel_size"),
        (dict(image=np.zeros((1, 8, 8)), thresholds=(100, 50)), ValueError, "low <= high"),
        (dict(image=np.zeros((1, 8, 8)), thresholds=5), TypeError, "pair"),
        (dict(image=np.zeros((8, 8))), ValueError, "dimensions"),
        (dict(image=np.zeros((1, 0, 8))), ValueError, "empty"),
        (dict(image=np.full((1, 8, 8), np.inf)), ValueError, "NaN"),
        (dict(image=np.zeros((1, 8, 8)), channel_reduction="min"), ValueError, "channel_reduction"),
        (dict(image=np.zeros((1, 8, 8, 8)), method="sobel"), ValueError, "method"),
    ],
)
def test_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        edge_map(**kwargs)


def test_to_uint8():
    assert to_uint8(np.array([0, 5], np.uint8)).tolist() == [0, 5]
    assert to_uint8(np.array([False, True])).tolist() == [0, 255]
    assert to_uint8(np.array([-1.0, 0.0, 1.0])).tolist() == [0, 128, 255]
