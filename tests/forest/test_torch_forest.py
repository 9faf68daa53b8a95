"""The torch forest build (``monai_shf.forest.torch_forest``): the numpy build's forests, batched, on any device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_shf.forest import build_forest, build_forests, edge_map, soft_edge_map
from monai_shf.forest.torch_forest import build_forest_torch

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

SHAPES = [
    (64, 64),
    (100, 37),
    (5, 300),
    (129, 257),
    (3, 3),
    (1, 40),
    (16, 16, 16),
    (33, 20, 17),
    (40, 40, 9),
    (2, 9, 30),
]
LENGTHS = [1, 7, 16, 50, 200]
SCORES = ["uint8", "bool", "float", "sparse", "soft", "canny"]


def _score(kind: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind in ("soft", "canny"):  # the two edge maps of a smooth random image (blobs)
        import cv2 as cv

        noise = rng.random(shape).astype(np.float32)
        image = cv.GaussianBlur(noise.reshape(shape[0], -1), (0, 0), 2.0).reshape(shape)[None]
        if kind == "soft":
            return soft_edge_map(image)
        return edge_map(image, edge_method="slicewise")
    if kind == "uint8":  # dense soft-edge-like values, many ties
        return rng.integers(0, 256, shape).astype(np.uint8)
    if kind == "bool":  # Canny-like binary edges
        return rng.random(shape) < 0.1
    if kind == "sparse":  # few edges: the fill phase decides most splits
        return ((rng.random(shape) < 0.003) * 255).astype(np.uint8)
    return rng.random(shape) * 3.7  # float64, non-dyadic: sums must be added in the numpy order


def _numpy_or_error(score: np.ndarray, length: int, **options):
    try:
        return build_forest(score, length, **options)
    except ValueError as e:
        return type(e)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", SCORES)
@pytest.mark.parametrize("criterion", ["error", "edges"])
@pytest.mark.parametrize("fill", ["uniform", "pad"])
def test_same_forests_as_the_numpy_build(shape, kind, criterion, fill):
    batch = np.stack([_score(kind, shape, seed) for seed in range(3)])
    for length in LENGTHS:
        for min_size, patch_size in ((2, 16), (1, None), (3, 4)):
            options = dict(criterion=criterion, fill=fill, min_size=min_size, patch_size=patch_size)
            expected = [_numpy_or_error(s, length, **options) for s in batch]
            if any(isinstance(e, type) for e in expected):
                assert all(e is ValueError for e in expected)
                with pytest.raises(ValueError):
                    build_forests(torch.from_numpy(batch), length, **options)
                continue
            got = build_forests(torch.from_numpy(batch), length, **options)
            assert got == expected, (length, options)


@pytest.mark.parametrize("area_prior", [0.0, 0.5, 3.0])
def test_area_prior_and_integer_dtypes(area_prior):
    rng = np.random.default_rng(5)
    for dtype in (np.int16, np.int32, np.int64, np.uint16):
        score = rng.integers(0, 1000, (2, 70, 90)).astype(dtype)
        got = build_forests(torch.from_numpy(score), 64, area_prior=area_prior)
        assert got == [build_forest(s, 64, area_prior=area_prior) for s in score]


def test_one_map_and_mapping_spec():
    score = _score("uint8", (48, 80), 0)
    forest = build_forest_torch(torch.from_numpy(score), {"length": 40, "criterion": "edges"})
    assert forest == build_forest(score, 40, criterion="edges")
    assert forest.num_leaves <= 40


def test_input_is_not_modified():
    score = torch.from_numpy(_score("bool", (40, 40), 1)[None])
    before = score.clone()
    build_forests(score, 30)
    assert torch.equal(score, before)


@pytest.mark.parametrize(
    ("scores", "error", "match"),
    [
        (np.zeros((1, 8, 8)), TypeError, "torch tensor"),
        (torch.zeros(8, 8), ValueError, "B, H, W"),
        (torch.zeros(0, 8, 8), ValueError, "empty"),
        (-torch.ones(1, 8, 8), ValueError, "non-negative"),
        (torch.full((1, 8, 8), float("nan")), ValueError, "finite"),
        (torch.zeros(1, 8, 8, dtype=torch.complex64), TypeError, "dtype"),
    ],
)
def test_bad_scores(scores, error, match):
    with pytest.raises(error, match=match):
        build_forests(scores, 4)


def test_bad_options_are_the_numpy_builds_errors():
    with pytest.raises(ValueError, match="min_size"):
        build_forests(torch.zeros(1, 8, 8), 4, min_size=9)
    with pytest.raises(ValueError, match="exceeds"):
        build_forests(torch.zeros(1, 4, 4), 17)
    with pytest.raises(ValueError, match="unknown|option"):
        build_forests(torch.zeros(1, 8, 8), 4, no_such_option=1)
    with pytest.raises(TypeError, match="torch tensor"):
        build_forest_torch(np.zeros((8, 8)), 4)


def test_cpu_tensors_keep_the_numpy_build(monkeypatch):
    """build_forest sends only device tensors to the torch build; CPU tensors take the numpy build."""
    import monai_shf.forest.torch_forest as torch_forest

    def fail(*args, **kwargs):
        raise AssertionError("the torch build was called for a CPU tensor")

    monkeypatch.setattr(torch_forest, "build_forest_torch", fail)
    score = _score("uint8", (32, 32), 2)
    assert build_forest(torch.from_numpy(score), 20) == build_forest(score, 20)


@pytest.fixture(scope="module")
def nuclei_grey(nuclei2d) -> np.ndarray:
    return nuclei2d[0][None]


@pytest.fixture(scope="module")
def mni_t1(mni152_dir) -> np.ndarray:
    nib = pytest.importorskip("nibabel")
    path = mni152_dir / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    return nib.load(str(path)).get_fdata(dtype=np.float32)[None]


@pytest.mark.parametrize("criterion", ["error", "edges"])
def test_real_nuclei_forests_from_either_edge_map(nuclei_grey, criterion):
    """The torch soft edges may differ by one grey level at rare pixels: the forests do not."""
    from monai_shf.forest import soft_edge_maps

    for k in (3, 7):
        numpy_map = soft_edge_map(nuclei_grey, kernel_size=k)
        torch_map = soft_edge_maps(torch.from_numpy(nuclei_grey[None]), kernel_size=k)
        for length in (64, 256, 1024):
            got = build_forests(torch_map, length, criterion=criterion)[0]
            assert got == build_forest(numpy_map, length, criterion=criterion), (k, length)
    canny = edge_map(nuclei_grey)  # bool Canny scores
    for length in (100, 700):
        assert build_forests(torch.from_numpy(canny[None]), length, criterion=criterion)[0] == build_forest(
            canny, length, criterion=criterion
        )


def test_real_mni152_forests_from_either_edge_map(mni_t1):
    from monai_shf.forest import soft_edge_maps

    numpy_map = soft_edge_map(mni_t1, kernel_size=3)
    torch_map = soft_edge_maps(torch.from_numpy(mni_t1[None]), kernel_size=3)
    for criterion in ("error", "edges"):
        for length in (512, 4096):
            got = build_forests(torch_map, length, criterion=criterion)[0]
            assert got == build_forest(numpy_map, length, criterion=criterion), (criterion, length)


@CUDA
def test_cuda_build_matches_and_dispatches():
    batch = np.stack([_score("uint8", (96, 80), s) for s in range(4)])
    cuda = torch.from_numpy(batch).cuda()
    assert build_forests(cuda, 100) == [build_forest(s, 100) for s in batch]
    assert build_forest(cuda[0], 100) == build_forest(batch[0], 100)
    assert build_forest(cuda[0].bool(), 60, criterion="edges") == build_forest(batch[0] > 0, 60, criterion="edges")
