"""monai_shf.forest.edges: edge maps of any dtype, range and channel count, 2D and 3D."""

from __future__ import annotations

from pathlib import Path

import cv2 as cv
import numpy as np
import pytest
import torch

from monai_shf.forest import canny_bands, edge_map, to_uint8

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


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


def test_mean_reduction_is_the_rounded_8bit_channel_mean():
    rgb = np.stack([_disc(value=200), _disc(value=100), np.zeros((64, 64))]).astype(np.uint8)
    mean = np.full((64, 64), 0, np.uint8)
    mean[_disc(value=1) > 0] = 100  # (200 + 100 + 0) / 3, not stretched to 255
    expected = cv.Canny(cv.GaussianBlur(mean, (3, 3), 0), 50, 100) > 0
    np.testing.assert_array_equal(edge_map(rgb, channel_reduction="mean"), expected)


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
    edges = edge_map(ball[None], kernel_size=3, thresholds=(50, 100), edge_method=method)
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
        (dict(image=np.zeros((1, 8, 8, 8)), edge_method="sobel"), ValueError, "edge_method"),
    ],
)
def test_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        edge_map(**kwargs)


def test_to_uint8():
    assert to_uint8(np.array([0, 5], np.uint8)).tolist() == [0, 5]
    assert to_uint8(np.array([False, True])).tolist() == [0, 255]
    assert to_uint8(np.array([-1.0, 0.0, 1.0])).tolist() == [0, 128, 255]


def _ihc() -> np.ndarray:
    path = DATA / "ihc2d" / "ihc.png"
    if not path.exists():
        pytest.skip(f"real data not found at {path} (the shared/ folder beside the repository)")
    return cv.cvtColor(cv.imread(str(path)), cv.COLOR_BGR2RGB)  # (512, 512, 3) uint8


def _whole_canny(hwc: np.ndarray, k: int, low: float, high: float) -> np.ndarray:
    return cv.Canny(cv.GaussianBlur(hwc, (k, k), 0) if k > 1 else hwc, low, high) > 0


@pytest.mark.parametrize("k", [1, 3, 5, 7])
def test_bands_equal_whole_image_canny_on_real_tissue(k):
    """Band borders every 64 (and 7) rows of real RGB tissue (tiled 2x to 1024 rows, rescaled 1.5x) change
    nothing: hysteresis chains that cross band borders are followed exactly."""
    ihc = _ihc()
    img = cv.resize(np.tile(ihc, (2, 1, 1)), (768, 1536), interpolation=cv.INTER_LINEAR)
    chw = np.moveaxis(img, -1, 0)
    for thresholds in [(50, 100), (10, 30)]:
        expected = _whole_canny(img, k, *thresholds)
        assert expected.sum() > 10_000
        got = canny_bands(lambda a, b: chw[:, a:b], img.shape[:2], k, thresholds, band_rows=64)
        assert got.dtype == bool and got.shape == img.shape[:2]
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(
            edge_map(chw, k, thresholds), expected
        )  # edge_map: its own bands (1366 rows here)
    if k == 3:
        thin = canny_bands(lambda a, b: chw[:, a:b], img.shape[:2], k, (10, 30), band_rows=7)
        np.testing.assert_array_equal(thin, expected)


def test_bands_equal_whole_image_canny_on_nuclei(nuclei2d):
    """Long weak chains (low thresholds) around nuclei taller than a band: the old halo-only bands lost 1.6% of
    the edges at band_rows=32."""
    img = to_uint8(nuclei2d[0])
    for k, thresholds in [(1, (20, 40)), (3, (10, 30)), (5, (50, 100)), (3, (5, 200))]:
        expected = _whole_canny(img, k, *thresholds)
        for band_rows in (3, 32) if k == 3 else (32,):
            got = canny_bands(lambda a, b: img[None, a:b], img.shape, k, thresholds, band_rows=band_rows)
            np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(edge_map(nuclei2d[0][None], k, thresholds), expected)


def test_bands_read_only_band_and_halo_rows_into_out():
    img = _disc((300, 50)).astype(np.uint8)[None]
    calls = []

    def read_rows(start, stop):
        calls.append((start, stop))
        return img[:, start:stop]

    out = np.zeros((300, 50), dtype=bool)
    result = canny_bands(read_rows, (300, 50), kernel_size=5, band_rows=40, out=out)
    assert result is out and out.sum() > 0
    halo = 5 // 2 + 2  # blur + Sobel + non-maximum suppression
    assert max(b - a for a, b in calls) == 40 + 2 * halo
    assert calls[0] == (0, 40 + halo) and calls[-1][1] == 300 and len(calls) == 8


def test_bands_two_channels_and_many_channels():
    disc = _disc().astype(np.uint8)
    two = np.stack([np.zeros_like(disc), disc])
    np.testing.assert_array_equal(
        canny_bands(lambda a, b: two[:, a:b], (64, 64), band_rows=16),
        _whole_canny(np.dstack([two[0], two[1], two[1]]), 3, 50, 100),
    )
    five = np.stack([disc] * 5)
    np.testing.assert_array_equal(canny_bands(lambda a, b: five[:, a:b], (64, 64), band_rows=16), edge_map(disc[None]))


def test_integer_input_has_no_float_temporary():
    """uint16 grey 4096^2 (bands of 1/16): scaled to 8 bits band by band (the old whole-image float32 copy took
    4 B/px)."""
    import tracemalloc

    img = np.broadcast_to((np.arange(4096, dtype=np.uint16) // 64 % 2 * 3000)[None, None], (1, 4096, 4096))
    tracemalloc.start()
    edges = edge_map(img)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert edges.shape == (4096, 4096) and edges.any()
    assert peak / img[0].size < 2.0, f"numpy peak {peak / img[0].size:.2f} bytes per pixel"


def test_input_is_not_modified_and_no_whole_image_copy():
    rgb = np.ascontiguousarray(np.moveaxis(_disc((256, 64)).astype(np.uint8)[..., None].repeat(3, -1), -1, 0))
    before = rgb.copy()
    edge_map(rgb)
    np.testing.assert_array_equal(rgb, before)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(read_rows=np.zeros((1, 8, 8))), TypeError, "read_rows must be a callable"),
        (dict(shape=(8,)), TypeError, "shape"),
        (dict(shape=(0, 8)), ValueError, "shape"),
        (dict(band_rows=0), ValueError, "band_rows"),
        (dict(out=np.zeros((8, 9), bool)), ValueError, "out must be"),
        (dict(out=np.zeros((8, 8), np.uint8)), ValueError, "out must be"),
        (dict(read_rows=lambda a, b: np.zeros((1, b - a, 8), np.float32)), TypeError, "uint8"),
        (dict(read_rows=lambda a, b: np.zeros((1, b - a, 7), np.uint8)), ValueError, "must return shape"),
        (
            dict(read_rows=lambda a, b: np.zeros((1 + a, b - a, 8), np.uint8), band_rows=2),
            ValueError,
            "must return shape",
        ),
        (dict(kernel_size=2), ValueError, "odd"),
        (dict(channel_reduction="min"), ValueError, "channel_reduction"),
    ],
)
def test_bands_bad_input(kwargs, error, match):
    args = dict(read_rows=lambda a, b: np.zeros((1, b - a, 8), np.uint8), shape=(8, 8)) | kwargs
    with pytest.raises(error, match=match):
        canny_bands(**args)


def test_bands_in_two_threads_equal_one_and_read_in_order_from_the_caller(nuclei2d):
    import threading

    image = np.ascontiguousarray(np.tile(nuclei2d[0], (2, 2)).astype(np.uint8)[None])
    calls = []

    def read_rows(start: int, stop: int) -> np.ndarray:
        calls.append((start, threading.get_ident()))
        return image[:, start:stop]

    one = canny_bands(read_rows, image.shape[1:], band_rows=37, workers=1)
    calls.clear()
    two = canny_bands(read_rows, image.shape[1:], band_rows=37, workers=2)
    np.testing.assert_array_equal(one, two)
    assert [start for start, _ in calls] == sorted(start for start, _ in calls)
    assert {ident for _, ident in calls} == {threading.get_ident()}
    with pytest.raises(ValueError, match="workers"):
        canny_bands(read_rows, image.shape[1:], band_rows=37, workers=0)
