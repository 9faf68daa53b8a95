"""monai_shf.forest.tree: the split criteria of build_forest ("error", "edges") against a brute-force heap."""

from __future__ import annotations

import heapq
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_shf.forest import SPLIT_CRITERIA, Forest, build_forest
from monai_shf.forest.tree import _root_counts


def _priority(score: np.ndarray, start, size, criterion: str, patch_size, area_prior: float) -> float:
    """A node's priority from its own pixels (no pyramid), written from the documented formula."""
    edges = float(score[tuple(slice(a, a + b) for a, b in zip(start, size))].sum(dtype=np.float64))
    if criterion == "edges":
        return edges
    side = float(max(size))
    if patch_size is not None and side <= patch_size:
        return 0.0
    value = edges * side
    if area_prior:
        value += area_prior * float(math.prod(size))
    return value


def _halves(start, size):
    """Children of a node in Z-order (axis 0 most significant), halving at ``start + size // 2``."""
    ndim = len(size)
    for k in range(2**ndim):
        bits = [(k >> (ndim - 1 - a)) & 1 for a in range(ndim)]
        half = [s // 2 for s in size]
        yield (
            k,
            tuple(st + (h if b else 0) for st, h, b in zip(start, half, bits)),
            tuple((s - h) if b else h for s, h, b in zip(size, half, bits)),
        )


def _heap_forest(score, length, min_size, criterion, patch_size, area_prior, fill) -> Forest:
    """Best-first reference build: one heap pop per split, priorities summed over pixels.

    Also checks, at every split, that no child outranks its parent (the property the vectorised
    level-by-level selection relies on)."""
    shape = score.shape
    ndim = score.ndim
    counts = _root_counts(shape, length, min_size)
    bounds = [np.round(np.linspace(0, s, c + 1)).astype(int) for s, c in zip(shape, counts)]
    heap = []
    for n, idx in enumerate(np.ndindex(*counts)):
        start = tuple(int(bounds[a][i]) for a, i in enumerate(idx))
        size = tuple(int(bounds[a][i + 1] - bounds[a][i]) for a, i in enumerate(idx))
        pri = _priority(score, start, size, criterion, patch_size, area_prior)
        heapq.heappush(heap, (-pri, -math.prod(size), (n,), start, size))
    budget = (length - len(heap)) // (2**ndim - 1)

    def splittable(size):
        return all(s >= 2 * min_size for s in size)

    # priority phase: positive priorities only
    leaves = []
    while budget and heap and heap[0][0] < 0:
        neg, neg_vol, path, start, size = heapq.heappop(heap)
        if not splittable(size):
            leaves.append((neg, neg_vol, path, start, size))
            continue
        budget -= 1
        for k, cs, cz in _halves(start, size):
            pri = _priority(score, cs, cz, criterion, patch_size, area_prior)
            assert pri <= -neg, "a child outranks its parent"
            if -neg > 0 and criterion == "error":
                assert pri < -neg, "error priorities must strictly decrease"
            heapq.heappush(heap, (-pri, -math.prod(cz), path + (k,), cs, cz))
    nodes = leaves + heap
    if fill == "uniform":  # largest splittable leaves first, ties in Z-order
        pool = [(-math.prod(size), path, start, size) for _, _, path, start, size in nodes]
        heapq.heapify(pool)
        done = []
        while budget and pool:
            neg_vol, path, start, size = heapq.heappop(pool)
            if not splittable(size):
                done.append((neg_vol, path, start, size))
                continue
            budget -= 1
            for k, cs, cz in _halves(start, size):
                heapq.heappush(pool, (-math.prod(cz), path + (k,), cs, cz))
        nodes = [(0, 0, path, start, size) for _, path, start, size in done + pool]
    nodes.sort(key=lambda n: n[2])  # Z-order is the order of the paths
    starts = np.array([n[3] for n in nodes], dtype=np.int64).reshape(-1, ndim)
    sizes = np.array([n[4] for n in nodes], dtype=np.int64).reshape(-1, ndim)
    return Forest(starts, sizes, shape, length)


def _random_score(rng, shape, density, weighted):
    score = rng.random(shape) < density
    if weighted:  # integer edge strengths: many ties and many distinct values
        return score * rng.integers(1, 4, size=shape)
    return score


@settings(max_examples=80, deadline=None)
@given(
    shape=st.lists(st.integers(1, 48), min_size=2, max_size=2),
    length=st.integers(1, 200),
    min_size=st.integers(1, 3),
    density=st.sampled_from([0.0, 0.02, 0.2, 1.0]),
    criterion=st.sampled_from(SPLIT_CRITERIA),
    patch_size=st.sampled_from([None, 1, 4, 8]),
    area_prior=st.sampled_from([0.0, 0.25, 1.0]),
    fill=st.sampled_from(["uniform", "pad"]),
    weighted=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_same_forest_as_a_best_first_heap_2d(
    shape, length, min_size, density, criterion, patch_size, area_prior, fill, weighted, seed
):
    shape = tuple(shape)
    if min_size > max(shape) or length > shape[0] * shape[1]:  # (more tokens than pixels is refused)
        return
    score = _random_score(np.random.default_rng(seed), shape, density, weighted)
    kwargs = dict(criterion=criterion, patch_size=patch_size, area_prior=area_prior)
    forest = build_forest(score, length, min_size=min_size, fill=fill, **kwargs)
    assert forest == _heap_forest(score, length, min_size, fill=fill, **kwargs)


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 14), min_size=3, max_size=3),
    length=st.integers(1, 120),
    density=st.sampled_from([0.0, 0.05, 0.5]),
    criterion=st.sampled_from(SPLIT_CRITERIA),
    patch_size=st.sampled_from([None, 2, 4]),
    area_prior=st.sampled_from([0.0, 0.5]),
    seed=st.integers(0, 2**16),
)
def test_same_forest_as_a_best_first_heap_3d(shape, length, density, criterion, patch_size, area_prior, seed):
    if length > np.prod(shape):  # more tokens than pixels is refused
        return
    score = _random_score(np.random.default_rng(seed), tuple(shape), density, weighted=True)
    kwargs = dict(criterion=criterion, patch_size=patch_size, area_prior=area_prior)
    forest = build_forest(score, length, min_size=1, fill="uniform", **kwargs)
    assert forest == _heap_forest(score, length, 1, fill="uniform", **kwargs)


@pytest.mark.parametrize("criterion", SPLIT_CRITERIA)
def test_exact_length_tiling_and_z_order(criterion):
    rng = np.random.default_rng(1)
    for shape, length, per_split in (((100, 77), 301, 3), ((24, 20, 30), 400, 7)):
        score = rng.random(shape) < 0.05
        forest = build_forest(score, length, criterion=criterion, patch_size=4)
        assert forest.num_leaves == length - (length - 1) % per_split  # no overshoot, no wasted budget
        index = forest.leaf_index_map()
        assert (index >= 0).all()
        assert np.array_equal(np.bincount(index.ravel()), np.prod(forest.sizes, axis=1)), "leaves overlap"
        # Z-order: the leaf at every pixel of a leaf's first corner is that leaf, and the corners of
        # consecutive leaves increase in Morton order (leaves of a halving tree, depth-first)
        assert (index[tuple(forest.starts.T)] == np.arange(forest.num_leaves)).all()
        assert forest == _heap_forest(score, length, 2, criterion, 4, 0.0, "uniform")


def test_error_never_splits_below_the_token_until_fill():
    score = np.zeros((256, 256), dtype=bool)
    score[96:112, 64:96] = np.random.default_rng(0).random((16, 32)) < 0.3  # one dense edge band
    for p in (4, 8, 16):
        padded = build_forest(score, 400, criterion="error", patch_size=p, fill="pad")
        # the band is refined down to the token side, never below it: the rest is padding
        assert padded.sizes.min() == p and padded.num_padding > 0
        filled = build_forest(score, 400, criterion="error", patch_size=p)
        assert filled.num_leaves == 400  # the leftover budget is not wasted
    # the paper's criterion spends the same budget down to min_size
    assert build_forest(score, 400, criterion="edges", fill="pad").sizes.min() == 2


def test_error_prefers_coarse_edges_over_fine_ones():
    # 8 edge pixels spread over the first quadrant (side 32) and 10 + 1 in the last one, 10 of them
    # packed in one 16-px child. After the root and the last quadrant, "edges" splits the child with
    # 10 edges; "error" splits the first quadrant: 8 * 32 > 10 * 16, blurring 8 edges over 32 / p
    # pixels costs more than 10 over 16 / p.
    score = np.zeros((64, 64), dtype=np.uint8)
    score[0, 0:32:4] = 1
    score[40:42, 40:45] = 1
    score[63, 63] = 1
    kwargs = dict(length=1 + 3 * 3, min_size=1, fill="pad")
    error = build_forest(score, criterion="error", patch_size=4, **kwargs)
    edges = build_forest(score, criterion="edges", **kwargs)
    assert tuple(error.sizes[0]) == (16, 16) and tuple(edges.sizes[0]) == (32, 32)
    assert (edges.sizes == 8).any() and not (error.sizes == 8).any()


def test_scale_invariance_of_the_error_order():
    # the same contours in a 2x upsampled image (one pixel wide, so twice as many edge pixels; 4x the
    # volumes) with a 2x token give the same forest, scaled: no scale-dependent weight
    rng = np.random.default_rng(4)
    small = np.zeros((64, 64), dtype=bool)
    big = np.zeros((128, 128), dtype=bool)
    for i in range(8):  # non-crossing axis-aligned segments
        r, c, n = 8 * i + int(rng.integers(0, 8)), int(rng.integers(0, 40)), int(rng.integers(3, 24))
        if i % 2:
            small[r, c : c + n] = True
            big[2 * r, 2 * c : 2 * (c + n)] = True
        else:
            small[c : c + n, r] = True
            big[2 * c : 2 * (c + n), 2 * r] = True
    for prior in (0.0, 0.5):
        a = build_forest(small, 97, criterion="error", patch_size=2, min_size=1, area_prior=prior)
        b = build_forest(big, 97, criterion="error", patch_size=4, min_size=2, area_prior=prior)
        assert np.array_equal(a.starts * 2, b.starts) and np.array_equal(a.sizes * 2, b.sizes)
        assert len(np.unique(a.sizes)) > 1  # an adaptive forest, not a uniform grid


def test_error_is_invariant_to_the_score_scale():
    score = np.random.default_rng(2).random((80, 96)) < 0.03
    ref = build_forest(score, 200, criterion="error", patch_size=4)
    assert build_forest(score.astype(np.float64) * 7.5, 200, criterion="error", patch_size=4) == ref


def test_default_is_error_and_edges_is_the_paper():
    score = np.random.default_rng(3).random((128, 128)) < 0.02
    assert build_forest(score, 300) == build_forest(score, 300, criterion="error")
    assert SPLIT_CRITERIA[0] == "error"
    paper = build_forest(score, 300, criterion="edges")
    assert paper != build_forest(score, 300, criterion="error", patch_size=8)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(criterion="entropy"), ValueError, "criterion"),
        (dict(criterion=None), (TypeError, ValueError), "criterion"),
        (dict(patch_size=0), ValueError, "patch_size"),
        (dict(patch_size=2.5), TypeError, "patch_size"),
        (dict(area_prior=-1.0), ValueError, "area_prior"),
        (dict(area_prior=float("nan")), ValueError, "area_prior"),
        (dict(area_prior="1"), TypeError, "area_prior"),
        (dict(area_prior=True), TypeError, "area_prior"),
    ],
)
def test_bad_criterion_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        build_forest(np.zeros((8, 8)), 4, **kwargs)


# ---------------------------------------------------------------------------------------------
# anisotropic spacing: the same best-first heap, with per-depth split axes and 2**k - 1 leaves per split


def _reference_schedule(shape, counts, min_size, rel):
    """The axes halved at every depth, from the documented rule: an axis can be halved while all its
    intervals are at least ``2 * min_size``; each depth halves the axes that can whose nominal extent in
    millimetres is more than half the longest of them."""
    levels = []
    for s, c in zip(shape, counts):
        lengths = np.diff(np.round(np.linspace(0, s, c + 1)).astype(int))
        n = 0
        while (lengths >= 2 * min_size).all():
            lengths = np.stack([lengths // 2, lengths - lengths // 2], axis=1).ravel()
            n += 1
        levels.append(n)
    extents = [s / c * r for s, c, r in zip(shape, counts, rel)]
    done, schedule = [0] * len(shape), []
    while True:
        live = [a for a in range(len(shape)) if done[a] < levels[a]]
        if not live:
            return schedule
        longest = max(extents[a] for a in live)
        axes = [a for a in live if 2 * extents[a] > longest]
        for a in axes:
            done[a] += 1
            extents[a] /= 2
        schedule.append(axes)


def _aniso_heap_forest(score, length, min_size, criterion, patch_size, spacing, fill) -> Forest:
    """Best-first reference build with a voxel spacing: one heap pop per split, priorities summed over
    pixels (the "error" side is the longest in millimetres); a split that does not fit the budget left
    is skipped (its node stays a leaf) and the heap goes on."""
    shape, ndim = score.shape, score.ndim
    rel = tuple(s / min(spacing) for s in spacing)
    counts = _root_counts(shape, length, min_size, rel)
    schedule = _reference_schedule(shape, counts, min_size, rel)
    bounds = [np.round(np.linspace(0, s, c + 1)).astype(int) for s, c in zip(shape, counts)]

    def priority(start, size):
        edges = float(score[tuple(slice(a, a + b) for a, b in zip(start, size))].sum(dtype=np.float64))
        if criterion == "edges":
            return edges
        if patch_size is not None and max(size) <= patch_size:
            return 0.0
        return edges * max(s * r for s, r in zip(size, rel))

    def splittable(depth, size):
        return depth < len(schedule) and all(size[a] >= 2 * min_size for a in schedule[depth])

    def children(depth, start, size):
        axes = schedule[depth]
        for k in range(2 ** len(axes)):
            cs, cz = list(start), list(size)
            for j, a in enumerate(axes):
                half = size[a] // 2
                if (k >> (len(axes) - 1 - j)) & 1:
                    cs[a], cz[a] = start[a] + half, size[a] - half
                else:
                    cz[a] = half
            yield k, tuple(cs), tuple(cz)

    heap = []
    for n, idx in enumerate(np.ndindex(*counts)):
        start = tuple(int(bounds[a][i]) for a, i in enumerate(idx))
        size = tuple(int(bounds[a][i + 1] - bounds[a][i]) for a, i in enumerate(idx))
        heapq.heappush(heap, (-priority(start, size), -math.prod(size), (n,), start, size))
    budget = length - len(heap)
    leaves = []
    while heap and heap[0][0] < 0:
        neg, neg_vol, path, start, size = heapq.heappop(heap)
        depth = len(path) - 1
        cost = 2 ** len(schedule[depth]) - 1 if depth < len(schedule) else 0
        if not splittable(depth, size) or cost > budget:
            leaves.append((neg, neg_vol, path, start, size))
            continue
        budget -= cost
        for k, cs, cz in children(depth, start, size):
            pri = priority(cs, cz)
            assert pri <= -neg, "a child outranks its parent"
            heapq.heappush(heap, (-pri, -math.prod(cz), path + (k,), cs, cz))
    nodes = [(path, start, size) for _, _, path, start, size in leaves + heap]
    if fill == "uniform":
        pool = [(-math.prod(size), path, start, size) for path, start, size in nodes]
        heapq.heapify(pool)
        done = []
        while budget and pool:
            neg_vol, path, start, size = heapq.heappop(pool)
            depth = len(path) - 1
            cost = 2 ** len(schedule[depth]) - 1 if depth < len(schedule) else 0
            if not splittable(depth, size) or cost > budget:
                done.append((path, start, size))
                continue
            budget -= cost
            for k, cs, cz in children(depth, start, size):
                heapq.heappush(pool, (-math.prod(cz), path + (k,), cs, cz))
        nodes = done + [(path, start, size) for _, path, start, size in pool]
    nodes.sort(key=lambda n: n[0])
    starts = np.array([n[1] for n in nodes], dtype=np.int64).reshape(-1, ndim)
    sizes = np.array([n[2] for n in nodes], dtype=np.int64).reshape(-1, ndim)
    return Forest(starts, sizes, shape, length)


ANISOTROPIC = [(1.0, 3.0), (4.0, 1.0), (0.5, 1.7), (1.0, 1.0, 5.0), (0.5, 0.5, 3.0), (2.0, 1.0, 1.3), (1.0, 2.5, 1.0)]


@settings(max_examples=60, deadline=None)
@given(
    spacing=st.sampled_from(ANISOTROPIC),
    sides=st.lists(st.integers(1, 40), min_size=3, max_size=3),
    length=st.integers(1, 150),
    min_size=st.integers(1, 3),
    density=st.sampled_from([0.0, 0.05, 0.5]),
    criterion=st.sampled_from(SPLIT_CRITERIA),
    patch_size=st.sampled_from([None, 2, 4]),
    fill=st.sampled_from(["uniform", "pad"]),
    seed=st.integers(0, 2**16),
)
def test_anisotropic_forest_is_the_best_first_heap(
    spacing, sides, length, min_size, density, criterion, patch_size, fill, seed
):
    shape = tuple(s if len(spacing) == 3 else 2 * s for s in sides[: len(spacing)])
    if length > np.prod(shape) or min_size > max(shape):
        return
    score = _random_score(np.random.default_rng(seed), shape, density, weighted=True)
    kwargs = dict(criterion=criterion, patch_size=patch_size, min_size=min_size, fill=fill)
    forest = build_forest(score, length, spacing=spacing, **kwargs)
    assert forest == _aniso_heap_forest(score, length, min_size, criterion, patch_size, spacing, fill)


@pytest.mark.parametrize("criterion", SPLIT_CRITERIA)
@pytest.mark.parametrize("fill", ["uniform", "pad"])
def test_anisotropic_budget_left_goes_to_cheaper_splits(criterion, fill):
    # a thick-slice volume: the slice axis runs out after three halvings, the deeper splits halve the
    # two in-plane axes only (3 leaves instead of 7); what a 7-leaf split cannot use goes to them
    rng = np.random.default_rng(5)
    score = np.zeros((32, 32, 8), dtype=np.uint8)
    score[:12, :12] = rng.random((12, 12, 8)) < 0.2
    exact = 0
    for length in range(1, 400, 3):
        forest = build_forest(score, length, spacing=(1, 1, 4), criterion=criterion, patch_size=2, fill=fill)
        reference = _aniso_heap_forest(score, length, 2, criterion, 2, (1, 1, 4), fill)
        assert forest == reference
        exact += forest.num_padding == 0
        if fill == "uniform":
            assert forest.num_padding <= 6
    if fill == "uniform":
        assert exact > 100
