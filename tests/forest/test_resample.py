"""monai_shf.forest.resample: serialize / deserialize."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from monai_shf.forest import Forest, build_forest, deserialize, serialize


def _reference_area(image: np.ndarray, forest: Forest, p: int) -> np.ndarray:
    """Per-leaf loop: token pixel i = mean of the leaf pixels o with floor(o * p / s) == i (s >= p),
    nearest pixel floor((i + 0.5) * s / p) otherwise."""
    c, ndim = image.shape[0], forest.spatial_dims
    out = np.zeros((c, forest.length) + (p,) * ndim)
    for n, (start, size) in enumerate(zip(forest.starts, forest.sizes)):
        leaf = image[(slice(None),) + tuple(slice(a, a + s) for a, s in zip(start, size))].astype(np.float64)
        for a, s in enumerate(size):
            axis = 1 + a
            if s >= p:
                owner = (np.arange(s) * p) // s
                leaf = np.stack(
                    [np.take(leaf, np.flatnonzero(owner == i), axis=axis).mean(axis=axis) for i in range(p)], axis=axis
                )
            else:
                leaf = np.take(leaf, ((2 * np.arange(p) + 1) * s) // (2 * p), axis=axis)
        out[:, n] = leaf
    return out


def _mixed_forest(shape=(48, 80), length=60, seed=0) -> Forest:
    return build_forest(np.random.default_rng(seed).random(shape) < 0.05, length)


@pytest.mark.parametrize(
    "shape,length,p",
    [((64, 64), 40, 8), ((48, 80), 60, 4), ((37, 29), 30, 3), ((16, 12, 20), 50, 4), ((32, 32, 32), 64, 8)],
)
def test_area_matches_reference_for_float_images(shape, length, p, rng):
    forest = build_forest(rng.random(shape) < 0.05, length)
    image = rng.random((2,) + shape).astype(np.float32)
    tokens = serialize(image, forest, p)
    assert tokens.shape == (2, length) + (p,) * len(shape) and tokens.dtype == np.float32
    np.testing.assert_allclose(tokens, _reference_area(image, forest, p), rtol=1e-5, atol=1e-6)


def test_integer_pyramid_is_within_half_a_grey_level_per_halving(rng):
    forest = build_forest(rng.random((256, 256)) < 0.01, 100)
    image = rng.integers(0, 256, (3, 256, 256), dtype=np.uint8)
    tokens = serialize(image, forest, 8)
    exact = _reference_area(image, forest, 8)
    levels = np.log2(np.maximum(forest.sizes[:, 0] / 8, 1))
    bound = 0.5 * levels[None, :, None, None] + 1e-6
    assert (np.abs(tokens[:, : forest.num_leaves] - exact[:, : forest.num_leaves]) <= bound).all()


def test_nearest_keeps_dtype_and_values(rng):
    forest = _mixed_forest()
    label = rng.integers(0, 5, (1, 48, 80)).astype(np.int16)
    tokens = serialize(label, forest, 4, mode="nearest")
    assert tokens.dtype == np.int16
    assert set(np.unique(tokens[:, : forest.num_leaves])) <= set(np.unique(label))
    start, size = forest.starts[0], forest.sizes[0]
    rows = start[0] + ((2 * np.arange(4) + 1) * size[0]) // 8
    cols = start[1] + ((2 * np.arange(4) + 1) * size[1]) // 8
    np.testing.assert_array_equal(tokens[0, 0], label[0][np.ix_(rows, cols)])


def test_fraction_tokens_are_exact_class_fractions(rng):
    forest = _mixed_forest()
    label = rng.integers(0, 3, (1, 48, 80))
    tokens = serialize(label, forest, 4, mode="fraction", num_classes=3)
    assert tokens.shape == (3, forest.length, 4, 4)
    onehot = np.stack([(label[0] == k) for k in range(3)]).astype(np.float32)
    np.testing.assert_allclose(tokens, _reference_area(onehot, forest, 4), atol=1e-6)
    np.testing.assert_allclose(tokens[:, : forest.num_leaves].sum(0), 1.0, atol=1e-6)
    assert (tokens[:, forest.num_leaves :] == 0).all()


@pytest.mark.parametrize("shape", [(64, 64), (37, 91), (16, 16, 16), (5, 7, 9)])
@pytest.mark.parametrize("length", [1, 7, 50])
def test_constant_image_round_trip(shape, length):
    forest = build_forest(np.random.default_rng(0).random(shape) < 0.1, length, min_size=1)
    # exact for values whose sums are exact (integers, short dyadic fractions) ...
    for value, dtype in ((7.0, np.float32), (42, np.uint8), (0.375, np.float64)):
        image = np.full((1,) + shape, value, dtype=dtype)
        tokens = serialize(image, forest, 4)
        assert (tokens[:, : forest.num_leaves] == np.asarray(value, dtype=tokens.dtype)).all()
        assert (deserialize(tokens, forest, mode="nearest") == np.asarray(value, dtype=tokens.dtype)).all()
        # linear depatching is a convex combination: exact up to float rounding of its weights
        np.testing.assert_allclose(
            deserialize(tokens, forest, mode="linear"), value, rtol=2e-7 if dtype != np.float64 else 1e-15
        )
    # ... and to float rounding for any other value
    image = np.full((1,) + shape, 0.1, dtype=np.float32)
    np.testing.assert_allclose(deserialize(serialize(image, forest, 4), forest), 0.1, rtol=1e-6)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("shape,p", [((64, 64), 8), ((32, 32, 32), 8)])
def test_label_with_leaves_no_larger_than_p_is_lossless(shape, p, mode, rng):
    ndim = len(shape)
    # enough budget that every leaf is at most p wide (p / leaf side a power of two)
    length = 1 + (2**ndim - 1) * sum((2**ndim) ** k for k in range(4 if ndim == 2 else 3))
    forest = build_forest(rng.random(shape) < 0.3, length, min_size=2)
    assert forest.sizes.max() <= p
    label = (rng.random((1,) + shape) < 0.4).astype(np.uint8)
    tokens = serialize(label, forest, p, mode="nearest")
    back = deserialize(tokens, forest, mode=mode)
    np.testing.assert_array_equal(back, label.astype(np.float32))


def test_linear_deserialize_matches_bilinear_interpolation(rng):
    forest = build_forest(np.zeros((64, 64)), 16)  # sixteen 16 x 16 leaves
    tokens = rng.random((2, 16, 8, 8)).astype(np.float32)
    canvas = deserialize(tokens, forest, mode="linear")
    for n in range(16):
        (r, c), (h, w) = forest.starts[n], forest.sizes[n]
        expected = F.interpolate(
            torch.from_numpy(tokens[:, n])[None], size=(h, w), mode="bilinear", align_corners=False
        )[0]
        np.testing.assert_allclose(canvas[:, r : r + h, c : c + w], expected.numpy(), atol=1e-6)


def test_soft_round_trip_is_faithful(rng):
    yy, xx = np.mgrid[:128, :128]
    mask = ((yy - 60) ** 2 + (xx - 70) ** 2 < 35**2).astype(np.uint8)
    edges = np.zeros((128, 128), bool)
    edges[np.abs(np.hypot(yy - 60, xx - 70) - 35) < 1] = True
    forest = build_forest(edges, 256)
    probs = deserialize(serialize(mask[None], forest, 4, mode="fraction", num_classes=2), forest)
    fg = probs[1] > 0.5
    dice = 2 * (fg & (mask > 0)).sum() / (fg.sum() + mask.sum())
    assert dice > 0.99


def test_torch_in_torch_out_and_inputs_untouched(rng):
    forest = _mixed_forest()
    image = torch.from_numpy(rng.random((1, 48, 80)).astype(np.float32))
    before = image.clone()
    tokens = serialize(image, forest, 4)
    assert isinstance(tokens, torch.Tensor) and tokens.device == image.device
    back = deserialize(tokens, forest)
    assert isinstance(back, torch.Tensor) and back.shape == image.shape
    assert torch.equal(image, before)
    np.testing.assert_allclose(tokens.numpy(), serialize(image.numpy(), forest, 4))
    t_before = tokens.clone()
    deserialize(tokens, forest)
    assert torch.equal(tokens, t_before)


def test_bool_uint16_and_read_only_inputs(rng):
    forest = _mixed_forest()
    mask = rng.random((1, 48, 80)) < 0.5
    assert serialize(mask, forest, 4, mode="nearest").dtype == bool
    np.testing.assert_allclose(serialize(mask, forest, 4), serialize(mask.astype(np.float32), forest, 4), atol=1e-6)
    image = rng.integers(0, 60000, (2, 48, 80)).astype(np.uint16)
    image.setflags(write=False)
    assert serialize(image, forest, 4).dtype == np.float32


def test_negative_strides_and_half_precision(rng):
    forest = _mixed_forest()
    image = rng.random((1, 48, 80)).astype(np.float32)
    flipped = np.flip(image, axis=2)
    np.testing.assert_array_equal(serialize(flipped, forest, 4), serialize(flipped.copy(), forest, 4))
    tokens = serialize(image, forest, 4)
    np.testing.assert_array_equal(
        deserialize(np.flip(tokens, axis=0), forest), deserialize(tokens[::-1].copy(), forest)
    )
    half = torch.from_numpy(image).half()
    np.testing.assert_allclose(
        serialize(half, forest, 4).numpy(), _reference_area(half.float().numpy(), forest, 4), atol=1e-5
    )
    forest3 = build_forest(rng.random((8, 12, 16)) < 0.1, 30)
    vol = torch.rand(1, 8, 12, 16).half()
    assert serialize(vol, forest3, 4).dtype == torch.float32


@pytest.mark.parametrize("where", [(0, 5, 7), (0, 32, 5), (0, 10, 31)])
def test_a_single_nan_anywhere_is_caught(where):
    # area tokens check finiteness through the pyramid: the odd border row must still be seen
    forest = build_forest(np.zeros((33, 32)), 40)
    image = np.zeros((1, 33, 32), dtype=np.float32)
    image[where] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        serialize(image, forest, 4)
    image[where] = -np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        serialize(torch.from_numpy(image), forest, 4, mode="nearest")


def test_padding_tokens_are_zero_and_ignored(rng):
    forest = build_forest(np.zeros((32, 32)), 10, fill="pad")
    assert forest.num_padding == 9
    tokens = serialize(rng.random((1, 32, 32)).astype(np.float32) + 1, forest, 4)
    assert (tokens[:, 1:] == 0).all()
    noisy = tokens.copy()
    noisy[:, 1:] = 99
    np.testing.assert_array_equal(deserialize(noisy, forest), deserialize(tokens, forest))


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda f: serialize(np.zeros((1, 10, 10)), f, 4), ValueError, "spatial shape"),
        (lambda f: serialize(np.zeros((32, 32)), f, 4), ValueError, "dimensions"),
        (lambda f: serialize(np.zeros((1, 32, 32)), f, 0), ValueError, "patch_size"),
        (lambda f: serialize(np.zeros((1, 32, 32)), f, 4.0), TypeError, "patch_size"),
        (lambda f: serialize(np.full((1, 32, 32), np.nan), f, 4), ValueError, "NaN"),
        (lambda f: serialize(np.zeros((1, 32, 32)), f, 4, mode="cubic"), ValueError, "mode"),
        (lambda f: serialize(np.zeros((2, 32, 32)), f, 4, mode="fraction", num_classes=2), ValueError, "one-channel"),
        (lambda f: serialize(np.zeros((1, 32, 32)), f, 4, mode="fraction"), ValueError, "num_classes is required"),
        (lambda f: serialize(np.full((1, 32, 32), 3), f, 4, mode="fraction", num_classes=2), ValueError, "num_classes"),
        (lambda f: serialize(np.full((1, 32, 32), 0.5), f, 4, mode="fraction", num_classes=2), ValueError, "integer"),
        (lambda f: serialize(np.zeros((1, 32, 32)), "forest", 4), TypeError, "forest"),
        (lambda f: deserialize(np.zeros((1, 9, 4, 4)), f), ValueError, "L=9"),
        (lambda f: deserialize(np.zeros((1, 10, 4, 3)), f), ValueError, "equal sides"),
        (lambda f: deserialize(np.zeros((1, 10, 4, 4, 4)), f), ValueError, "dimensions"),
        (lambda f: deserialize(np.zeros((1, 10, 4, 4)), f, mode="cubic"), ValueError, "mode"),
        (lambda f: deserialize(np.zeros((1, 0, 4, 4)), f), ValueError, "empty"),
    ],
)
def test_bad_input(call, error, match):
    forest = build_forest(np.zeros((32, 32)), 10)
    with pytest.raises(error, match=match):
        call(forest)


# --- regression tests ------------------------------------------------------------------------

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
]


def test_fraction_without_num_classes_is_an_error():
    """K was inferred per sample (max + 1), so channel counts differed across samples."""
    forest = build_forest(np.zeros((32, 32)), 10)
    with pytest.raises(ValueError, match="num_classes is required"):
        serialize(np.zeros((1, 32, 32), np.uint8), forest, 4, mode="fraction")
    # with K given, an all-background sample has the same K channels as any other
    tokens = serialize(np.zeros((1, 32, 32), np.uint8), forest, 4, mode="fraction", num_classes=3)
    assert tokens.shape[0] == 3 and np.all(tokens[0, : forest.num_leaves] == 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_finite_values_near_the_dtype_maximum_give_finite_tokens(dtype):
    """Finite float32 values near the maximum were reported as NaN/inf."""
    top = float(np.finfo(dtype).max)
    image = np.full((2, 64, 64), top * 0.9, dtype=dtype)
    image[1, :32] = top * 0.5
    forest = build_forest(np.random.default_rng(0).random((64, 64)) < 0.05, 30)
    tokens = serialize(image, forest, 8)
    expected = _reference_area(image.astype(np.float64), forest, 8)
    np.testing.assert_allclose(tokens, expected, rtol=1e-3)
    assert np.isfinite(tokens).all()
    t_tokens = serialize(torch.from_numpy(image), forest, 8)
    np.testing.assert_allclose(t_tokens.numpy(), expected, rtol=1e-3)
    image[0, 5, 7] = np.inf  # real infinities are still caught
    with pytest.raises(ValueError, match="NaN or infinite"):
        serialize(image, forest, 8)


def test_bfloat16_images_and_tokens(rng):
    """bfloat16 passed validation and then crashed inside numpy."""
    forest = _mixed_forest()
    image = torch.from_numpy(rng.random((2, 48, 80)).astype(np.float32)).to(torch.bfloat16)
    area = serialize(image, forest, 4)
    assert area.dtype == torch.float32
    np.testing.assert_allclose(area.numpy(), serialize(image.float(), forest, 4).numpy(), atol=1e-6)
    nearest = serialize(image, forest, 4, mode="nearest")
    assert nearest.dtype == torch.bfloat16
    assert torch.equal(nearest.float(), serialize(image.float(), forest, 4, mode="nearest"))
    for mode in ("linear", "nearest"):
        out = deserialize(nearest, forest, mode)
        assert out.dtype == torch.float32
        assert torch.equal(out, deserialize(nearest.float(), forest, mode))


def _small_leaf_forest() -> Forest:
    """A 16x16 image: a 2x2 leaf, its 2x2 / 4x4 / 8x8 neighbours (sides below, at and above p = 8)."""
    starts = [[0, 0], [0, 2], [2, 0], [2, 2], [0, 4], [4, 0], [4, 4], [0, 8], [8, 0], [8, 8]]
    sizes = [[2, 2], [2, 2], [2, 2], [2, 2], [4, 4], [4, 4], [4, 4], [8, 8], [8, 8], [8, 8]]
    return Forest(np.array(starts), np.array(sizes), (16, 16), 12)


def test_linear_depatching_of_small_leaves_averages_the_whole_token(rng):
    """A 2x2 leaf sampled 4 of its token's 64 values; it is the mean of 4x4 blocks."""
    forest = _small_leaf_forest()
    tokens = rng.random((2, 12, 8, 8)).astype(np.float32)
    out = deserialize(tokens, forest, "linear")
    for (r, c), (h, w) in zip(forest.starts, forest.sizes):
        k = 8 // h
        if k > 1:  # leaf pixel (i, j) = mean of the k x k token block it covers
            expected = tokens[:, forest.leaf_index_map()[r, c]].reshape(2, h, k, w, k).mean(axis=(2, 4))
            np.testing.assert_allclose(out[:, r : r + h, c : c + w], expected, rtol=1e-6)
    # leaves at least as large as the token still interpolate: an 8x8 leaf is its token
    n8 = int(np.flatnonzero(forest.sizes[:, 0] == 8)[0])
    r, c = forest.starts[n8]
    np.testing.assert_allclose(out[:, r : r + 8, c : c + 8], tokens[:, n8], rtol=1e-6)
    # the area adjoint inverts area serialisation of such leaves (constant over each leaf pixel's block)
    image = rng.random((1, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(deserialize(serialize(image, forest, 8), forest, "linear"), image, rtol=1e-6)


@pytest.mark.parametrize("num_classes", [2, 3, 300])
@pytest.mark.parametrize("mode", ["linear", "nearest"])
def test_argmax_is_the_argmax_of_the_depatched_scores(num_classes, mode, rng):
    """Class indices written directly, smallest integer dtype."""
    forest = _mixed_forest()
    tokens = rng.random((num_classes, forest.length, 4, 4)).astype(np.float32)
    labels = deserialize(tokens, forest, mode, argmax=True)
    assert labels.shape == (1, 48, 80)
    assert labels.dtype == (np.uint8 if num_classes <= 256 else np.int16)
    scores = deserialize(tokens, forest, mode)
    expected = scores.argmax(0)
    sorted_scores = np.sort(scores, axis=0)
    clear = sorted_scores[-1] - sorted_scores[-2] > 1e-5  # (float rounding may flip exact near-ties)
    np.testing.assert_array_equal(labels[0][clear], expected[clear])
    assert clear.mean() > 0.99
    t_labels = deserialize(torch.from_numpy(tokens), forest, mode, argmax=True)
    assert torch.equal(t_labels, torch.from_numpy(labels))


def test_argmax_needs_no_float_canvas():
    """No K x H x W float canvas; about 1 B/px (the uint8 output) plus small chunks."""
    import tracemalloc

    side = 2048
    forest = build_forest(np.random.default_rng(0).random((side, side)) < 0.01, 1024)
    tokens = np.random.default_rng(1).random((2, forest.length, 8, 8)).astype(np.float32)
    deserialize(tokens, forest, argmax=True)  # warm up torch's lazy initialisation
    tracemalloc.start()
    labels = deserialize(tokens, forest, argmax=True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert labels.dtype == np.uint8
    # the float canvas alone would be 8 B/px (32 MiB); the output is 4 MiB, the chunk scratch <= 8 MiB
    assert peak < side * side + 10 * 2**20, peak


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int64, bool])
def test_nearest_depatching_keeps_integer_dtypes(dtype, rng):
    """Integer tokens in, the same integer dtype out (was float32)."""
    forest = _mixed_forest()
    label = (rng.random((1, 48, 80)) * 3).astype(dtype)
    tokens = serialize(label, forest, 4, mode="nearest")
    out = deserialize(tokens, forest, "nearest")
    assert out.dtype == np.dtype(dtype)
    expected = deserialize(tokens.astype(np.float64), forest, "nearest")
    np.testing.assert_array_equal(out, expected.astype(dtype))


def test_argmax_must_be_a_bool():
    forest = build_forest(np.zeros((32, 32)), 10)
    with pytest.raises(TypeError, match="argmax"):
        deserialize(np.zeros((2, 10, 4, 4)), forest, argmax="yes")


@pytest.mark.parametrize("device", DEVICES)
def test_tokens_and_depatched_outputs_stay_on_the_input_device(device, rng):
    """Tokens, depatched outputs and class maps on the input's device."""
    forest = _mixed_forest()
    image = torch.from_numpy(rng.random((3, 48, 80)).astype(np.float32)).to(device)
    label = torch.from_numpy((rng.random((1, 48, 80)) * 3).astype(np.uint8)).to(device)
    outputs = {
        "area": serialize(image, forest, 4),
        "nearest": serialize(label, forest, 4, mode="nearest"),
        "fraction": serialize(label, forest, 4, mode="fraction", num_classes=3),
    }
    outputs["linear"] = deserialize(outputs["fraction"], forest, "linear")
    outputs["nearest back"] = deserialize(outputs["nearest"], forest, "nearest")
    outputs["argmax linear"] = deserialize(outputs["fraction"], forest, "linear", argmax=True)
    outputs["argmax nearest"] = deserialize(outputs["fraction"], forest, "nearest", argmax=True)
    for name, out in outputs.items():
        assert out.device.type == torch.device(device).type, name
    assert outputs["nearest back"].dtype == torch.uint8
    # same values as the CPU (numpy) path
    np.testing.assert_array_equal(
        outputs["nearest back"].cpu().numpy(),
        deserialize(serialize(label.cpu().numpy(), forest, 4, "nearest"), forest, "nearest"),
    )
    cpu = deserialize(outputs["fraction"].cpu().numpy(), forest, "nearest", argmax=True)
    np.testing.assert_array_equal(outputs["argmax nearest"].cpu().numpy(), cpu)


def test_patch_size_is_bounded_by_the_image():
    """p = 10^4 tokens of a 64^2 image would ask for L * 10^8 values: a clear error naming p."""
    forest = build_forest(np.zeros((64, 48)), 16)
    with pytest.raises(ValueError, match="patch_size p=10000 exceeds every side of the image \\(64, 48\\)"):
        serialize(np.zeros((1, 64, 48), np.float32), forest, 10**4)
    assert serialize(np.zeros((1, 64, 48), np.float32), forest, 64).shape == (1, 16, 64, 64)  # the longest side


def test_meta_tensors_are_a_clear_error():
    forest = build_forest(np.zeros((64, 64)), 16)
    with pytest.raises(ValueError, match="image is a tensor on the 'meta' device"):
        serialize(torch.zeros(1, 64, 64, device="meta"), forest, 4)
    with pytest.raises(ValueError, match="tokens is a tensor on the 'meta' device"):
        deserialize(torch.zeros(2, 16, 4, 4, device="meta"), forest)


# leaves of a thick-slice volume: boxes, resampled to p**3 per axis
def _box_forest(rng, length=300) -> Forest:
    return build_forest(rng.random((64, 64, 16)) < 0.05, length, spacing=(1.0, 1.0, 4.0), patch_size=8)


def test_box_leaves_area_tokens_match_the_per_axis_reference(rng):
    forest = _box_forest(rng)
    assert (forest.sizes[:, 2] != forest.sizes[:, 0]).all(), "boxes, not cubes"
    image = rng.random((2, 64, 64, 16)).astype(np.float32)
    tokens = serialize(image, forest, 8)
    assert tokens.shape == (2, 300, 8, 8, 8)
    np.testing.assert_allclose(tokens, _reference_area(image, forest, 8), rtol=1e-5, atol=1e-6)
    uint8 = (image * 255).astype(np.uint8)
    np.testing.assert_allclose(serialize(uint8, forest, 8), _reference_area(uint8, forest, 8), atol=1e-3)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_box_leaves_no_larger_than_p_are_lossless(mode, rng):
    forest = _box_forest(rng, length=2000)
    assert forest.sizes.max() <= 8 and (8 % forest.sizes == 0).all()
    label = (rng.random((1, 64, 64, 16)) < 0.4).astype(np.uint8)
    back = deserialize(serialize(label, forest, 8, mode="nearest"), forest, mode=mode)
    np.testing.assert_array_equal(back, label.astype(np.float32))


def test_box_leaves_linear_depatching_is_trilinear_per_axis(rng):
    # two roots of 64 x 64 x 16 voxels (64 x 64 x 64 mm), halved once: sixteen 32 x 32 x 8 boxes
    forest = build_forest(np.zeros((64, 64, 32)), 16, spacing=(1.0, 1.0, 4.0))
    assert {tuple(int(v) for v in s) for s in forest.sizes} == {(32, 32, 8)}
    tokens = rng.random((2, 16, 4, 4, 4)).astype(np.float32)
    canvas = deserialize(tokens, forest, mode="linear")
    for n in range(16):
        box = tuple(slice(a, a + s) for a, s in zip(forest.starts[n], forest.sizes[n]))
        expected = F.interpolate(
            torch.from_numpy(tokens[:, n])[None], size=tuple(forest.sizes[n]), mode="trilinear", align_corners=False
        )[0]
        np.testing.assert_allclose(canvas[(slice(None),) + box], expected.numpy(), atol=1e-6)
