"""leaf_read_levels: the coarsest level at which a leaf still spans p pixels, in 2D and 3D alike."""

from __future__ import annotations

import numpy as np
import pytest

from monai_shf.forest import build_forest
from monai_shf.forest.pyramid import leaf_read_levels, level0_to_level


@pytest.mark.parametrize("shape", [(256, 192), (64, 96, 48)])
def test_each_leaf_reads_the_coarsest_level_where_it_spans_p(shape):
    rng = np.random.default_rng(0)
    forest = build_forest(rng.integers(0, 255, shape).astype(np.uint8), 128, min_size=2)
    dims = len(shape)
    level_shapes = [tuple(-(-s // 2**k) for s in shape) for k in range(4)]
    level_scales = [(float(2**k),) * dims for k in range(4)]
    p = 4
    levels, starts, sizes = leaf_read_levels(forest, level_scales, level_shapes, p, top=3)
    for i in range(forest.num_leaves):
        k = int(levels[i])
        assert (sizes[i] >= p).all() or k == 0
        expected = np.floor(forest.starts[i] / 2**k + 0.5).astype(np.int64)
        np.testing.assert_array_equal(starts[i], np.minimum(expected, level_shapes[k]))
        if k < 3:  # one level coarser would be smaller than p along some axis
            lo = level0_to_level(forest.starts[i], 2 ** (k + 1), 10**9)
            hi = level0_to_level(forest.ends[i], 2 ** (k + 1), 10**9)
            assert ((hi - lo) < p).any()
    assert levels.max() > 0  # leaves of 8+ pixels go up at least one level
    top0 = leaf_read_levels(forest, level_scales, level_shapes, p, top=0)
    assert (top0[0] == 0).all() and (top0[1] == forest.starts).all()
