import numpy as np
import pytest
from ome_zarr.io import parse_url
from ome_zarr.reader import Label, Multiscales, Reader
from volume_files import blob_volume, write_store

from monai_shf.forest import build_forest, deserialize, soft_edge_map
from monai_shf.volume import open_volume, write_volume_mask


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    x = blob_volume(48)
    store = write_store(tmp_path_factory.mktemp("w") / "v.zarr", x, levels=3, chunk=16, spacing=(3.0, 1.0, 1.0))
    forest = build_forest(soft_edge_map(x[None]), 80, patch_size=4)
    return store, forest


def test_mask_equals_in_memory_argmax_and_is_an_ngff_label(case, tmp_path):
    store, forest = case
    pred = np.random.default_rng(1).normal(size=(3, 80, 4, 4, 4))
    pred[:, :30] = np.array([0.0, 5.0, 1.0])[:, None, None, None, None]  # constant leaves take the shortcut
    out = write_volume_mask(tmp_path / "m.zarr", forest, pred, like=store, chunk=16)
    m = open_volume(out)
    assert m.dtype == np.uint8 and m.spacing == (3.0, 1.0, 1.0)
    level0 = m.read(0, (0, 0, 0), m.shape)[0]
    np.testing.assert_array_equal(level0, np.asarray(deserialize(pred, forest, mode="linear", argmax=True))[0])
    # pyramid by nearest downsampling
    np.testing.assert_array_equal(m.read(1, (0, 0, 0), m.level_shapes[1])[0], level0[::2, ::2, ::2])
    nodes = list(Reader(parse_url(str(out)))())
    specs = {type(s) for n in nodes for s in n.specs}
    assert Label in specs and Multiscales in specs
    assert [p.name for p in tmp_path.iterdir()] == ["m.zarr"]  # no temporary left


def test_integer_labels(case, tmp_path):
    store, forest = case
    labels = np.random.default_rng(2).integers(0, 3, (1, 80, 4, 4, 4)).astype(np.uint8)
    out = write_volume_mask(tmp_path / "m.zarr", forest, labels, like=store, chunk=16)
    np.testing.assert_array_equal(
        open_volume(out).read(0, (0, 0, 0), (48, 48, 48))[0], np.asarray(deserialize(labels, forest, mode="nearest"))[0]
    )


def test_bad_input_writes_nothing(case, tmp_path):
    store, forest = case
    other = write_store(tmp_path / "o.zarr", blob_volume(32), levels=2, chunk=8)
    pred = np.zeros((2, 80, 4, 4, 4), np.float32)
    with pytest.raises(ValueError, match=r"o\.zarr.*shape"):
        write_volume_mask(tmp_path / "m.zarr", forest, pred, like=other)
    with pytest.raises(ValueError, match="L=80"):
        write_volume_mask(tmp_path / "m.zarr", forest, pred[:, :5])
    bad = pred.copy()
    bad[0, 0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError):
        write_volume_mask(tmp_path / "m.zarr", forest, bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.zarr"]


def test_failure_mid_write_leaves_old_store(case, tmp_path):
    store, forest = case
    pred = np.random.default_rng(3).normal(size=(2, 80, 4, 4, 4))
    out = write_volume_mask(tmp_path / "m.zarr", forest, pred, chunk=16)
    before = open_volume(out).read(0, (0, 0, 0), (48, 48, 48))
    from monai_shf.volume import writer

    def boom(*a):
        raise RuntimeError("disk full")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(writer._MaskRenderer, "__call__", boom)
        with pytest.raises(RuntimeError, match="disk full"):
            write_volume_mask(tmp_path / "m.zarr", forest, -pred, chunk=16)
    np.testing.assert_array_equal(open_volume(out).read(0, (0, 0, 0), (48, 48, 48)), before)
    assert [p.name for p in tmp_path.iterdir()] == ["m.zarr"]


def _smooth_scores(forest, p: int, k: int = 3) -> np.ndarray:
    """Scores that vary smoothly with the token node's level-0 position: most node boxes agree on the
    argmax, class borders cross some leaves (the renderer's fill and resampling paths both run)."""
    pos = []
    for a in range(3):
        t = (np.arange(p) + 0.5) / p
        pos.append(forest.starts[:, a, None] + t[None] * forest.sizes[:, a, None])  # (N, p)
    z, y, x = pos[0][:, :, None, None], pos[1][:, None, :, None], pos[2][:, None, None, :]
    base = [np.sin(z / 9.0) + np.cos(y / 7.0), np.cos(x / 8.0) - np.sin(z / 11.0), 0.3 * np.sin((x + y) / 6.0)]
    pred = np.zeros((k, forest.length, p, p, p), np.float32)
    for c in range(k):
        pred[c, : forest.num_leaves] = np.broadcast_to(base[c % 3], (forest.num_leaves, p, p, p))
    return pred


@pytest.mark.parametrize("p", [4, 8])  # p=8: leaves smaller than the token take the area-mean path
def test_smooth_scores_fill_and_resample_agree_with_deserialize(case, tmp_path, p):
    from monai_shf.volume import writer

    store, forest = case
    pred = _smooth_scores(forest, p)
    renderer = writer._MaskRenderer(forest, pred[:, : forest.num_leaves], "scores")
    mixed = (renderer.cells == 255).mean()
    assert 0.0 < mixed < 0.5  # both paths are taken
    out = write_volume_mask(tmp_path / "m.zarr", forest, pred, chunk=16, workers=1)
    m = open_volume(out)
    level0 = m.read(0, (0, 0, 0), m.shape)[0]
    np.testing.assert_array_equal(level0, np.asarray(deserialize(pred, forest, mode="linear", argmax=True))[0])
    for level in range(1, m.level_count):  # every level rendered at its own voxels: nearest of level 0
        step = 2**level
        expected = level0[::step, ::step, ::step][tuple(slice(0, s) for s in m.level_shapes[level])]
        np.testing.assert_array_equal(m.read(level, (0, 0, 0), m.level_shapes[level])[0], expected)


def test_threads_write_the_same_store(case, tmp_path):
    store, forest = case
    pred = _smooth_scores(forest, 4)
    one = write_volume_mask(tmp_path / "a.zarr", forest, pred, chunk=8, workers=1)
    two = write_volume_mask(tmp_path / "b.zarr", forest, pred, chunk=8, workers=3)
    va, vb = open_volume(one), open_volume(two)
    for level in range(va.level_count):
        shape = va.level_shapes[level]
        np.testing.assert_array_equal(va.read(level, (0, 0, 0), shape), vb.read(level, (0, 0, 0), shape))
