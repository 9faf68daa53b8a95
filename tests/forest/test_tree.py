"""monai_shf.forest.tree: the best-first quadtree/octree and the Forest record."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_shf.forest import Forest, build_forest

SEED_PATH = Path(__file__).resolve().parents[3] / "shared" / "reference" / "seed_shf.py"


def _reference_z_order(forest: Forest) -> list[tuple]:
    """Depth-first (Z-order) enumeration of the leaves, rebuilt independently from the leaf set:
    a box that is not a leaf is halved like the forest does and its children visited in Z-order."""
    leaves = {(tuple(s), tuple(z)) for s, z in zip(forest.starts.tolist(), forest.sizes.tolist())}
    ndim = forest.spatial_dims
    order: list[tuple] = []

    def visit(start, size):
        if (start, size) in leaves:
            order.append((start, size))
            return
        assert all(s >= 2 for s in size), "leaf set does not come from halving"
        halves = [s // 2 for s in size]
        for k in range(2**ndim):
            bits = [(k >> (ndim - 1 - a)) & 1 for a in range(ndim)]
            cs = tuple(st + (h if b else 0) for st, h, b in zip(start, halves, bits))
            cz = tuple((s - h) if b else h for s, h, b in zip(size, halves, bits))
            visit(cs, cz)

    # roots: the leaves' coarsest boxes, found as the tiling of the image by maximal root boxes
    roots = _roots(forest)
    for start, size in roots:
        visit(start, size)
    return order


def _roots(forest: Forest) -> list[tuple]:
    from monai_shf.forest.tree import _root_counts

    shape = forest.spatial_shape
    counts = _root_counts(shape, forest.length, min_size=1)
    # the roots used by a forest are recovered from the build rule with min_size of the test below
    bounds = [np.round(np.linspace(0, s, c + 1)).astype(int) for s, c in zip(shape, counts)]
    out = []
    for idx in np.ndindex(*counts):
        start = tuple(int(bounds[a][i]) for a, i in enumerate(idx))
        size = tuple(int(bounds[a][i + 1] - bounds[a][i]) for a, i in enumerate(idx))
        out.append((start, size))
    return out


def _check_tiling(forest: Forest) -> None:
    index = forest.leaf_index_map()
    assert (index >= 0).all(), "gap in the tiling"
    assert int(np.prod(forest.sizes, axis=1).sum()) == int(np.prod(forest.spatial_shape)), "overlap in the tiling"
    counts = np.bincount(index.ravel(), minlength=forest.num_leaves)
    assert np.array_equal(counts, np.prod(forest.sizes, axis=1))


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(1, 70), min_size=2, max_size=2),
    length=st.integers(1, 300),
    min_size=st.integers(1, 3),
    density=st.sampled_from([0.0, 0.01, 0.2, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_tiling_length_and_zorder_2d(shape, length, min_size, density, seed):
    shape = tuple(shape)
    if min_size > max(shape):
        return
    score = np.random.default_rng(seed).random(shape) < density
    if length > np.prod(shape):  # more tokens than pixels: refused
        with pytest.raises(ValueError, match="length L=.* exceeds the .* pixels"):
            build_forest(score, length, min_size=min_size)
        return
    forest = build_forest(score, length, min_size=min_size)
    _check_tiling(forest)
    assert forest.length == length and forest.num_leaves <= length
    assert forest.token_mask().sum() == forest.num_leaves and forest.token_mask().shape == (length,)
    # leaves never below min_size, except along an axis that is itself shorter
    for a, s in enumerate(shape):
        assert (forest.sizes[:, a] >= min(min_size, s)).all()
    # padding: at most 2^D - 2 unless no leaf could be split any further
    splittable = (forest.sizes >= 2 * min_size).all(axis=1)
    if forest.num_padding > 2:
        assert not splittable.any(), "budget left unused while a leaf could still be split"
    if min_size == 1:
        order = _reference_z_order(forest)
        got = [(tuple(s), tuple(z)) for s, z in zip(forest.starts.tolist(), forest.sizes.tolist())]
        assert got == order


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 18), min_size=3, max_size=3),
    length=st.integers(1, 400),
    density=st.sampled_from([0.0, 0.05, 0.5]),
    seed=st.integers(0, 2**16),
)
def test_tiling_and_zorder_3d(shape, length, density, seed):
    shape = tuple(shape)
    score = np.random.default_rng(seed).random(shape) < density
    if length > np.prod(shape):  # more tokens than pixels: refused
        with pytest.raises(ValueError, match="length L=.* exceeds the .* pixels"):
            build_forest(score, length, min_size=1)
        return
    forest = build_forest(score, length, min_size=1)
    _check_tiling(forest)
    assert forest.num_leaves <= length
    splittable = (forest.sizes >= 2).all(axis=1)
    if forest.num_padding > 6:
        assert not splittable.any()
    got = [(tuple(s), tuple(z)) for s, z in zip(forest.starts.tolist(), forest.sizes.tolist())]
    assert got == _reference_z_order(forest)


def test_z_order_of_a_uniform_quadtree():
    forest = build_forest(np.zeros((4, 4)), length=16, min_size=1)
    # the 16 pixels in Morton order (row bit above column bit)
    expected = [
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
        (0, 2),
        (0, 3),
        (1, 2),
        (1, 3),
        (2, 0),
        (2, 1),
        (3, 0),
        (3, 1),
        (2, 2),
        (2, 3),
        (3, 2),
        (3, 3),
    ]
    assert [tuple(s) for s in forest.starts.tolist()] == expected


def test_exact_length_for_every_budget():
    score = np.random.default_rng(0).random((128, 128)) < 0.05
    for length in range(1, 80):
        forest = build_forest(score, length)
        assert forest.num_leaves == length - (length - 1) % 3
    for length in (1, 7, 8, 9, 15, 50):
        forest = build_forest(np.random.default_rng(0).random((32, 32, 32)) < 0.05, length)
        assert forest.num_leaves == length - (length - 1) % 7


def test_best_first_follows_the_edges():
    score = np.zeros((64, 64), dtype=bool)
    score[40:44, 8:12] = True  # one small blob of edges
    forest = build_forest(score, length=13, min_size=1, fill="pad")
    # the blob is refined, the empty quadrants are not
    small = forest.sizes[:, 0] < 16
    assert small.any()
    rows, cols = forest.starts[small, 0], forest.starts[small, 1]
    assert (rows >= 32).all() and (cols < 32).all()


def test_unsplittable_leaves_do_not_stop_the_others():
    score = np.zeros((64, 64), dtype=np.uint8)
    score[:2, :2] = 1  # the densest leaf reaches min_size quickly...
    score[50, 50] = 1  # ...while a weaker edge elsewhere still deserves refinement
    forest = build_forest(score, length=1 + 3 * 12, min_size=2, fill="pad")
    around = (
        (forest.starts[:, 0] <= 50) & (50 < forest.ends[:, 0]) & (forest.starts[:, 1] <= 50) & (50 < forest.ends[:, 1])
    )
    assert forest.sizes[around].max() == 2, "the seed's global stop at the first min-size leaf is back"
    assert forest.num_leaves == 1 + 3 * 9  # root + 4 splits down each of the two edge paths, then padding


def test_fill_area_and_pad():
    blank = np.zeros((64, 64))
    area = build_forest(blank, length=1 + 3 + 12 + 48)
    assert area.num_leaves == 64 and (area.sizes == 8).all(), "no-edge budget must become a uniform grid"
    pad = build_forest(blank, length=64, fill="pad")
    assert pad.num_leaves == 1 and pad.num_padding == 63


def test_ties_are_broken_by_volume_then_z_order():
    score = np.ones((8, 8), dtype=bool)  # all children equal: Z-order decides
    forest = build_forest(score, length=7, min_size=1)
    small = forest.sizes[:, 0] == 2
    assert small.sum() == 4 and (forest.starts[small] < 4).all(), "the first quadrant in Z-order is split first"


def test_non_square_and_non_power_of_two_shapes():
    score = np.random.default_rng(3).random((37, 250)) < 0.1
    forest = build_forest(score, length=100)
    _check_tiling(forest)
    assert forest.num_leaves >= 98
    # roots keep leaves near-square on elongated images
    ratio = forest.sizes.max(axis=1) / forest.sizes.min(axis=1)
    assert ratio.max() <= 4


def test_deterministic_and_input_untouched():
    score = (np.random.default_rng(5).random((100, 80)) < 0.1).astype(np.float32)
    before = score.copy()
    a = build_forest(score, 301)
    b = build_forest(score, 301)
    assert a == b and hash(a) == hash(b)
    assert np.array_equal(score, before)


def test_score_types_agree():
    edges = np.random.default_rng(7).random((96, 96)) < 0.05
    ref = build_forest(edges, 301)
    assert build_forest(edges.astype(np.uint8) * 255, 301) == ref
    assert build_forest(edges.astype(np.float32), 301) == ref
    assert build_forest(torch.from_numpy(edges), 301) == ref


def test_no_integer_overflow_on_large_0_255_maps():
    # 8192^2 * 255 overflows int32 and uint32: the counts must still order correctly
    score = np.full((8192, 8192), 255, dtype=np.uint8)
    score[:4096, :4096] = 0
    forest = build_forest(score, length=7, min_size=1, fill="pad")
    # the empty quadrant (Z-order first) must not be split: its score is 0
    assert forest.num_leaves == 7
    first = forest.starts[0]
    assert tuple(first) == (0, 0) and tuple(forest.sizes[0]) == (4096, 4096)


def test_geom_and_dict_round_trip():
    forest = build_forest(np.random.default_rng(0).random((64, 48)) < 0.1, length=50)
    geom = forest.geom()
    assert geom.shape == (50, 4) and geom.dtype == np.float32
    real = geom[: forest.num_leaves]
    assert (real >= 0).all() and (real <= 1).all()
    assert (geom[forest.num_leaves :] == 0).all()
    info = forest.to_dict()
    assert info["starts"].shape == (50, 2)
    assert Forest.from_dict(info) == forest
    torch_info = {k: torch.as_tensor(v)[None] for k, v in info.items()}  # after collation of one sample
    assert Forest.from_dict(torch_info) == forest


def _load_seed():
    if not SEED_PATH.exists():
        pytest.skip(f"seed reference not found at {SEED_PATH}")
    spec = importlib.util.spec_from_file_location("seed_shf", SEED_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("seed_shf", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("side,splits", [(64, 0), (64, 1), (64, 7), (64, 30), (128, 60), (128, 100)])
def test_same_leaf_set_as_the_seed(side, splits):
    seed = _load_seed()
    rng = np.random.default_rng(side + splits)
    # positive, distinct-ish weights: no ties at the cut, no zero-score leaves, no 2-px stop
    weights = rng.integers(1, 1_000_000, size=(side, side)).astype(np.int64)
    length = 1 + 3 * splits
    reference = seed.FixedHierachicalForest(domain=weights * 255, fixed_length=length)
    expected = {(y1, x1, y2 - y1, x2 - x1) for x1, x2, y1, y2 in reference.encode_nodes()}
    forest = build_forest(weights, length, min_size=1, criterion="edges")  # the paper's criterion
    got = {(s[0], s[1], z[0], z[1]) for s, z in zip(forest.starts.tolist(), forest.sizes.tolist())}
    assert got == expected


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(score=np.zeros((0, 5)), length=4), ValueError, "empty"),
        (dict(score=np.zeros(5), length=4), ValueError, "dimensions"),
        (dict(score=np.zeros((2, 2, 2, 2)), length=4), ValueError, "dimensions"),
        (dict(score=np.array([[np.nan, 0], [0, 0]]), length=4), ValueError, "NaN"),
        (dict(score=np.array([[np.inf, 0], [0, 0]]), length=4), ValueError, "NaN or infinite"),
        (dict(score=-np.ones((4, 4)), length=4), ValueError, "non-negative"),
        (dict(score=np.zeros((4, 4)), length=0), ValueError, "length"),
        (dict(score=np.zeros((4, 4)), length=4.0), TypeError, "length"),
        (dict(score=np.zeros((4, 4)), length=True), TypeError, "length"),
        (dict(score=np.zeros((4, 4)), length=4, min_size=0), ValueError, "min_size"),
        (dict(score=np.zeros((4, 4)), length=4, min_size=2.5), TypeError, "min_size"),
        (dict(score=np.zeros((4, 4)), length=4, min_size=5), ValueError, "min_size"),
        (dict(score=np.zeros((4, 4)), length=4, fill="zeros"), ValueError, "fill"),
        (dict(score=[[0, 1], [1, 0]], length=4), TypeError, "score"),
        (dict(score=np.zeros((4, 4), dtype=complex), length=4), TypeError, "dtype"),
    ],
)
def test_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        build_forest(**kwargs)


def test_constant_and_all_zero_images_are_valid():
    for score in (np.zeros((32, 32)), np.full((32, 32), 3.0), np.ones((32, 32), dtype=bool)):
        forest = build_forest(score, 22)
        _check_tiling(forest)
        assert forest.num_leaves == 22


@pytest.mark.parametrize(
    "shape,min_size,length,leaves", [((3, 100), 2, 50, 50), ((5, 1, 9), 1, 44, 40), ((1, 7), 1, 7, 7)]
)
def test_images_too_thin_to_split_use_their_budget_as_roots(shape, min_size, length, leaves):
    forest = build_forest(np.ones(shape), length, min_size=min_size)
    _check_tiling(forest)
    assert forest.num_leaves == leaves
    for a, s in enumerate(shape):
        assert (forest.sizes[:, a] >= min(min_size, s)).all()


def test_forest_record_validation():
    with pytest.raises(ValueError, match="length"):
        Forest(np.zeros((3, 2)), np.ones((3, 2)), (4, 4), 2)
    with pytest.raises(ValueError, match="inside"):
        Forest(np.zeros((1, 2)), np.full((1, 2), 5), (4, 4), 2)
    with pytest.raises(ValueError, match="missing"):
        Forest.from_dict({"starts": np.zeros((1, 2))})
    with pytest.raises(ValueError, match="tile"):
        Forest(np.zeros((2, 2)), np.full((2, 2), 2), (64, 64), 2)


# --- regression tests ------------------------------------------------------------------------


def test_overlapping_or_gapped_leaves_are_rejected():
    """Leaves whose volumes add up but overlap and leave a gap were accepted."""
    # two 2x4 leaves over the top half of a 4x4 image: the volumes add up to 16, the bottom half is a gap
    starts, sizes = np.array([[0, 0], [0, 0]]), np.array([[2, 4], [2, 4]])
    with pytest.raises(ValueError, match="overlap or leave a gap"):
        Forest(starts, sizes, (4, 4), 2)
    # a corrupted record (one box moved by a pixel) never reaches deserialize
    record = build_forest(np.random.default_rng(0).random((32, 48)) < 0.1, 40).to_dict()
    record["starts"] = record["starts"].copy()
    record["starts"][3, 1] += 1
    with pytest.raises(ValueError, match="overlap or leave a gap"):
        Forest.from_dict(record)
    # 3D: an octant duplicated in place of its neighbour
    forest = build_forest(np.zeros((8, 8, 8)), 8)
    starts = forest.starts.copy()
    starts[1] = starts[0]
    with pytest.raises(ValueError, match="overlap or leave a gap"):
        Forest(starts, forest.sizes, (8, 8, 8), 8)


@pytest.mark.parametrize("shape,length", [((64, 64), 100), ((37, 91), 57), ((16, 12, 20), 200), ((5, 1, 9), 44)])
def test_built_forests_pass_the_tiling_check(shape, length):
    forest = build_forest(np.random.default_rng(1).random(shape) < 0.2, length, min_size=1)
    again = Forest(forest.starts, forest.sizes, forest.spatial_shape, forest.length)
    assert again == forest
    assert Forest.from_dict(forest.to_dict()) == forest
    # any permutation of the leaves is still a tiling
    order = np.random.default_rng(2).permutation(forest.num_leaves)
    Forest(forest.starts[order], forest.sizes[order], forest.spatial_shape, forest.length)


def test_collated_record_is_refused_with_a_clear_error():
    """A collated record (batch > 1) gave an obscure "spatial_shape" error."""
    records = [build_forest(np.zeros((32, 32)), n).to_dict() for n in (4, 7)]
    records[0]["length"] = records[1]["length"] = 7
    for r in records:
        r["starts"], r["sizes"] = np.resize(r["starts"], (7, 2)), np.resize(r["sizes"], (7, 2))
    collated = {k: torch.stack([torch.as_tensor(np.asarray(r[k])) for r in records]) for k in records[0]}
    with pytest.raises(ValueError, match="decollate"):
        Forest.from_dict(collated)
    # a batch of one is one sample's record
    single = {k: torch.as_tensor(np.asarray(v))[None] for k, v in records[1].items()}
    assert Forest.from_dict(single) == build_forest(np.zeros((32, 32)), 7)


def test_integer_score_sums_beyond_int64_are_an_error():
    """Sums above int64 wrapped silently (a 64x64 map of 2**62 built a forest)."""
    with pytest.raises(ValueError, match="int64"):
        build_forest(np.full((64, 64), 2**62, dtype=np.int64), 16)
    with pytest.raises(ValueError, match="int64"):
        build_forest(np.full((64, 64), np.iinfo(np.uint64).max, dtype=np.uint64), 16)
    # large values whose sums still fit are exact
    score = np.zeros((64, 64), dtype=np.int64)
    score[40, 40] = 2**50
    score[10, 10] = 2**50 - 1
    assert build_forest(score, 4) == build_forest(score > 0, 4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_scores(dtype):
    """bfloat16 passed validation, then crashed inside numpy."""
    score = torch.from_numpy((np.random.default_rng(3).random((64, 64)) < 0.1).astype(np.float32))
    assert build_forest(score.to(dtype), 40) == build_forest(score, 40)


def test_fill_uniform_and_pad():
    """fill="uniform" (uniform refinement) is distinct from the serialisation mode "area": the pre-release
    alias fill="area" is gone and is an error naming the choices."""
    from monai_shf.forest import FILL_MODES

    assert FILL_MODES == ("uniform", "pad")
    score = np.zeros((64, 48))
    score[10, 10] = 1
    uniform = build_forest(score, 100, fill="uniform")
    with pytest.raises(ValueError, match="fill must be one of"):
        build_forest(score, 100, fill="area")
    assert uniform.num_leaves > build_forest(score, 100, fill="pad").num_leaves


@pytest.mark.parametrize("density", [0.002, 0.05, 0.3])
@pytest.mark.parametrize("shape,length", [((256, 256), 300), ((200, 328), 1000), ((64, 64, 64), 500)])
def test_lazy_count_pyramid_gives_the_same_forest(monkeypatch, density, shape, length):
    """Dense maps sum a coarser first level and the finer ones only when read."""
    from monai_shf.forest import tree

    rng = np.random.default_rng(5)
    score = rng.random(shape) < density
    score[tuple(slice(0, s // 4) for s in shape)] |= rng.random(tuple(s // 4 for s in shape)) < 0.5  # a hot spot
    monkeypatch.setattr(tree, "_DENSE_FRACTION", 2.0)  # never lazy: the finest level at once
    expected = build_forest(score, length)
    calls = []
    original = tree._count_pyramid
    monkeypatch.setattr(tree, "_count_pyramid", lambda *a: calls.append(a[2]) or original(*a))
    monkeypatch.setattr(tree, "_DENSE_FRACTION", 0.0)  # always lazy
    assert build_forest(score, length) == expected
    assert build_forest(score.astype(np.uint16) * 7, length) == expected
    assert len(calls) >= 2 and min(calls) < max(calls)  # a coarse first level, the finest when read


def test_lazy_count_pyramid_skips_the_finest_levels_on_dense_edges(monkeypatch):
    from monai_shf.forest import tree

    calls = []
    original = tree._count_pyramid
    monkeypatch.setattr(tree, "_count_pyramid", lambda *a: calls.append(a[2]) or original(*a))
    uniform = np.random.default_rng(0).random((512, 512)) < 0.2
    build_forest(uniform, 1000)
    assert len(calls) == 1 and calls[0] == 7 - tree._LAZY_LEVELS  # 512 / 2**8 = 2 = 2 * min_size: depth 7
    calls.clear()
    sparse = np.zeros((512, 512), bool)
    sparse[100, 100:140] = True
    build_forest(sparse, 1000)
    assert calls == [7]  # sparse maps: the finest level at once


def test_length_is_bounded_by_the_pixels():
    """L = 10^9 tokens on a 64^2 image: a clear error naming L, not a MemoryError."""
    with pytest.raises(ValueError, match="length L=1000000000 exceeds the 4096 pixels of the image \\(64, 64\\)"):
        build_forest(np.zeros((64, 64)), 10**9)
    assert build_forest(np.zeros((64, 64)), 4096, min_size=1).num_leaves == 4096  # one leaf per pixel
    with pytest.raises(ValueError, match="length L=5 exceeds the 4 pixels"):
        Forest(np.zeros((1, 2)), np.array([[2, 2]]), (2, 2), 5)


def test_meta_tensors_are_a_clear_error():
    with pytest.raises(ValueError, match="score is a tensor on the 'meta' device"):
        build_forest(torch.zeros(64, 64, device="meta"), 16)


# ---------------------------------------------------------------------------------------------
# voxel spacing

# digests of the starts and sizes of every forest of _spacing_cases(shape), made by the voxel-cube
# build before spacing existed: an isotropic spacing must give these forests bit for bit
VOXEL_CUBE_DIGESTS = [
    ((64, 64), "eda10814306919ac"),
    ((100, 37), "29d43764240b0673"),
    ((48, 130), "9254c306c7eb787a"),
    ((7, 200), "7a6c3a28298c8ae6"),
    ((256, 64), "6922e086e388805b"),
    ((33, 33, 33), "11fddb3bb68e9101"),
    ((40, 64, 16), "f4316fcdc6b8912d"),
    ((24, 50, 70), "0b8cfbc6adaeec20"),
    ((64, 64, 8), "467edfa3ca1f7709"),
    ((5, 80, 80), "9c5003137cc7243c"),
]


def _spacing_digest(shape, seed, **kwargs) -> str:
    import hashlib

    rng = np.random.default_rng(seed)
    score = (rng.random(shape) ** 6 * 255).astype(np.uint8)
    score[tuple(slice(0, n // 2) for n in shape)] = 0  # edges in part of the image only
    h = hashlib.sha256()
    for length in (1, 4, 7, 16, 50, 129, 400):
        if length > np.prod(shape):
            continue
        for criterion, fill, min_size, p in (
            ("error", "uniform", 2, 8),
            ("edges", "uniform", 2, None),
            ("error", "pad", 1, 4),
            ("edges", "pad", 3, None),
        ):
            f = build_forest(score, length, criterion=criterion, fill=fill, min_size=min_size, patch_size=p, **kwargs)
            h.update(f.starts.astype(np.int64).tobytes())
            h.update(f.sizes.astype(np.int64).tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("seed,case", list(enumerate(VOXEL_CUBE_DIGESTS)))
def test_isotropic_spacing_is_the_voxel_cube_forest(seed, case):
    shape, digest = case
    ndim = len(shape)
    assert _spacing_digest(shape, seed) == digest
    for spacing in ((1.0,) * ndim, (2.0,) * ndim, (0.7,) * ndim, (1.0,) * (ndim - 1) + (1.0 + 1e-7,)):
        assert _spacing_digest(shape, seed, spacing=spacing) == digest, spacing


def _aspect(forest: Forest, spacing) -> np.ndarray:
    """Longest over shortest side of every leaf, in millimetres."""
    mm = forest.sizes * np.asarray(spacing, dtype=np.float64)
    return mm.max(1) / mm.min(1)


@pytest.mark.parametrize(
    "shape,spacing",
    [((64, 64, 16), (1, 1, 5)), ((128, 128, 32), (0.5, 0.5, 3)), ((16, 64, 64), (4, 1, 1)), ((64, 256), (4, 1))],
)
@pytest.mark.parametrize("length", [1, 8, 64, 300, 1000])
def test_anisotropic_leaves_are_per_axis_halvings_that_tile(shape, spacing, length):
    score = (np.random.default_rng(length).random(shape) ** 8 * 255).astype(np.uint8)
    forest = build_forest(score, length, spacing=spacing, patch_size=4)
    Forest(forest.starts, forest.sizes, forest.spatial_shape, forest.length)  # the tiling check
    sizes = forest.sizes
    assert ((sizes & (sizes - 1)) == 0).all(), "power-of-two images: every leaf side is a power of two"
    assert (forest.starts % sizes == 0).all(), "leaves on their own grid, as halving gives"
    assert forest.num_leaves + forest.num_padding == length
    if length >= 8:  # the boxes differ per axis (in voxels), and geom says so
        assert (sizes != sizes[:, :1]).any()
        geom = forest.geom()[: forest.num_leaves, len(shape) :]
        expected = np.log2(sizes) / np.log2(np.asarray(shape, dtype=np.float64))
        np.testing.assert_allclose(geom, expected, rtol=1e-6)


@pytest.mark.parametrize(
    "shape,spacing", [((64, 64, 16), (1, 1, 5)), ((128, 128, 24), (0.5, 0.5, 3)), ((96, 128), (1, 3))]
)
@pytest.mark.parametrize("length", [8, 64, 300])
def test_physical_aspect_is_closer_to_one_than_voxel_cubes(shape, spacing, length):
    score = (np.random.default_rng(0).random(shape) ** 8 * 255).astype(np.uint8)
    aware = build_forest(score, length, spacing=spacing, patch_size=4)
    cubes = build_forest(score, length, patch_size=4)
    assert np.median(_aspect(aware, spacing)) < np.median(_aspect(cubes, spacing))
    assert np.median(_aspect(aware, spacing)) <= 2.0


@settings(max_examples=40, deadline=None)
@given(
    sides=st.lists(st.integers(2, 48), min_size=3, max_size=3),
    spacing=st.lists(st.sampled_from([0.5, 1.0, 1.3, 3.0, 5.0]), min_size=3, max_size=3),
    length=st.integers(1, 600),
    density=st.sampled_from([0.0, 0.05, 1.0]),
    criterion=st.sampled_from(["error", "edges"]),
    seed=st.integers(0, 2**16),
)
def test_exact_length_with_spacing(sides, spacing, length, density, criterion, seed):
    shape = tuple(sides)
    if length > np.prod(shape):
        return
    score = np.random.default_rng(seed).random(shape) < density
    forest = build_forest(score, length, spacing=spacing, criterion=criterion, patch_size=4)
    assert forest.length == length and forest.num_leaves <= length
    _check_tiling(forest)
    # padding beyond 2**D - 2 only when no leaf can be split any more: then the forest is the full tree
    # (the one of a budget of one token per pixel, when the roots are the same)
    if forest.num_padding > 6:
        from monai_shf.forest.spacing import relative_spacing
        from monai_shf.forest.tree import _root_counts

        pixels = int(np.prod(shape))
        rel = relative_spacing(spacing, 3)
        if _root_counts(shape, length, 2, rel) == _root_counts(shape, pixels, 2, rel):
            full = build_forest(score, pixels, spacing=spacing, criterion=criterion, patch_size=4)
            assert full.num_leaves == forest.num_leaves


@pytest.mark.parametrize(
    "spacing,error",
    [
        ((1.0, 0.0, 1.0), ValueError),
        ((1.0, -2.0, 1.0), ValueError),
        ((1.0, float("nan"), 1.0), ValueError),
        ((1.0, float("inf"), 1.0), ValueError),
        ((1.0, 1.0), ValueError),
        ((1.0, 1.0, 1.0, 1.0), ValueError),
        ("meta", TypeError),
        ((1.0, "2", 1.0), TypeError),
        (5.0, TypeError),
    ],
)
def test_bad_spacing_is_an_error_naming_it(spacing, error):
    from monai_shf.forest import edge_forest

    with pytest.raises(error, match="spacing"):
        build_forest(np.zeros((8, 8, 8)), 8, spacing=spacing)
    with pytest.raises(error, match="spacing"):
        edge_forest(np.zeros((1, 8, 8, 8)), 8, spacing=spacing)


def test_spacing_is_keyword_only_and_not_a_forest_option():
    score = np.zeros((16, 16))
    with pytest.raises(TypeError):
        build_forest(score, 4, None, (1.0, 2.0))  # positional: refused
    from monai_shf.forest import ForestSpec

    with pytest.raises(ValueError, match="spacing"):
        ForestSpec.create(4, spacing=(1.0, 2.0))
