"""monai_shf.transforms.array: EdgeMap, HierarchicalPatch (invertible), Depatch."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.utils import TraceKeys

from monai_shf.forest import build_forest, edge_map, soft_edge_map
from monai_shf.transforms import (
    Depatch,
    EdgeMap,
    HierarchicalPatch,
    MaskPaddingTokens,
    MaskPaddingTokensd,
    forest_from_trace,
    resolve_depatch_mode,
)


def _blobs(shape=(96, 128), seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros(shape, np.float32)
    for _ in range(6):
        cy, cx, r = rng.integers(10, shape[0] - 10), rng.integers(10, shape[1] - 10), rng.integers(5, 15)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = 1.0
    return img


def test_edge_map_transform_keeps_metadata():
    affine = torch.diag(torch.tensor([2.0, 3.0, 1.0, 1.0]))
    img = MetaTensor(torch.from_numpy(_blobs())[None] * 200, affine=affine)
    out = EdgeMap(kernel_size=3, thresholds=(50, 100))(img)
    assert isinstance(out, MetaTensor) and out.shape == (1, 96, 128) and out.dtype == torch.uint8
    assert torch.equal(out.affine, img.affine)
    np.testing.assert_array_equal(out[0].numpy(), soft_edge_map(img.numpy()))
    canny = EdgeMap(kernel_size=3, thresholds=(50, 100), edge_kind="canny")(img)
    assert isinstance(canny, MetaTensor) and canny.dtype == torch.bool
    np.testing.assert_array_equal(canny[0].numpy(), edge_map(img.numpy()))
    assert EdgeMap()(img.numpy()).shape == (1, 96, 128)
    with pytest.raises(ValueError, match="kind"):
        EdgeMap(edge_kind="sobel")


def test_patch_records_a_picklable_forest_and_inverts():
    img = MetaTensor(torch.from_numpy(_blobs())[None] * 100)
    patch = HierarchicalPatch(length=100, patch_size=8)
    tokens = patch(img)
    assert isinstance(tokens, MetaTensor) and tokens.shape == (1, 100, 8, 8)
    op = tokens.applied_operations[-1]
    assert op[TraceKeys.CLASS_NAME] == "HierarchicalPatch"
    assert op[TraceKeys.EXTRA_INFO]["mode"] == "linear"
    assert tuple(op[TraceKeys.ORIG_SIZE]) == (96, 128)
    pickle.loads(pickle.dumps(op))  # numpy / int / str only
    back = patch.inverse(tokens)
    assert back.shape == (1, 96, 128) and not back.applied_operations
    forest = patch.build(img)
    assert forest == build_forest(
        soft_edge_map(img.numpy()), 100, min_size=2, patch_size=8
    )  # the token side caps splits


def test_label_modes_and_padding_value():
    label = MetaTensor(torch.from_numpy(_blobs())[None].to(torch.uint8))
    patch = HierarchicalPatch(length=100, patch_size=8, mode="nearest", padding_value=255)
    forest = build_forest(np.zeros((96, 128)), 100, fill="pad")
    tokens = patch(label, forest=forest)
    assert tokens.dtype == torch.uint8
    assert (tokens[:, forest.num_leaves :] == 255).all()
    assert tokens.applied_operations[-1][TraceKeys.EXTRA_INFO]["mode"] == "nearest"
    soft = patch(label, forest=forest, mode="fraction", num_classes=2)
    assert soft.shape == (2, 100, 8, 8) and soft.dtype == torch.float32
    assert soft.applied_operations[-1][TraceKeys.EXTRA_INFO]["mode"] == "linear"


def test_numpy_input_is_traced_and_negative_padding_widens_the_dtype():
    patch = HierarchicalPatch(length=100, patch_size=8, mode="nearest", padding_value=-100)
    label = _blobs()[None].astype(np.uint8)
    tokens = patch(label, forest=build_forest(np.zeros((96, 128)), 100, fill="pad"))
    assert isinstance(tokens, MetaTensor) and tokens.applied_operations
    assert tokens.dtype == torch.int16 and (tokens[:, 1:] == -100).all()
    assert patch.inverse(tokens).shape == (1, 96, 128)
    # the dtype follows the arguments, not the sample: a sample without padding gets int16 too
    full = patch(label, forest=build_forest(np.zeros((96, 128)), 100))
    assert full.dtype == torch.int16


def test_depatch_from_trace_or_explicit_forest():
    img = MetaTensor(torch.from_numpy(_blobs())[None])
    patch = HierarchicalPatch(length=64, patch_size=4, kernel_size=1)
    tokens = patch(img)
    out = Depatch(mode="nearest")(tokens)
    assert out.shape == (1, 96, 128)
    forest = patch.build(img)
    bare = torch.rand(3, 64, 4, 4)  # e.g. a network's prediction, no trace
    assert Depatch()(bare, forest=forest).shape == (3, 96, 128)
    with pytest.raises(TypeError, match="MetaTensor"):
        Depatch()(bare)
    with pytest.raises(ValueError, match="no HierarchicalPatch"):
        Depatch()(MetaTensor(bare))


def test_3d_patch_and_inverse():
    vol = np.zeros((24, 20, 16), np.float32)
    vol[6:18, 4:12, 5:11] = 100
    img = MetaTensor(torch.from_numpy(vol)[None])
    patch = HierarchicalPatch(length=57, patch_size=4, edge_method="slicewise")
    tokens = patch(img)
    assert tokens.shape == (1, 57, 4, 4, 4)
    back = patch.inverse(tokens)
    assert back.shape == (1, 24, 20, 16)
    assert torch.allclose(back[0, 10, 8, 8], torch.tensor(100.0)) and torch.allclose(
        back[0, 1, 1, 1], torch.tensor(0.0)
    )


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(length=0, patch_size=8), ValueError, "length"),
        (dict(length=16.0, patch_size=8), TypeError, "length"),
        (dict(length=16, patch_size=0), ValueError, "patch_size"),
        (dict(length=16, patch_size="8"), TypeError, "patch_size"),
        (dict(length=16, patch_size=8, min_size=1.5), TypeError, "min_size"),
        (dict(length=16, patch_size=8, mode="bilinear"), ValueError, "mode"),
        (dict(length=16, patch_size=8, inverse_mode="cubic"), ValueError, "inverse_mode"),
        (dict(length=16, patch_size=8, kernel_size=2), ValueError, "odd"),
        (dict(length=16, patch_size=8, thresholds=(9, 1)), ValueError, "thresholds"),
        (dict(length=16, patch_size=8, fill="none"), ValueError, "fill"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        HierarchicalPatch(**kwargs)


def test_min_size_larger_than_the_image():
    with pytest.raises(ValueError, match="min_size"):
        HierarchicalPatch(length=16, patch_size=8, min_size=200)(np.zeros((1, 96, 128)))


def test_mask_padding_tokens():
    tokens = torch.ones(2, 5, 4, 4)
    mask = torch.tensor([True, True, True, False, False])
    out = MaskPaddingTokens()(tokens, mask)
    assert out[:, :3].sum() == 2 * 3 * 16 and out[:, 3:].sum() == 0 and tokens.sum() == 2 * 5 * 16
    d = MaskPaddingTokensd(["pred"])({"pred": tokens, "token_mask": mask})
    assert torch.equal(d["pred"], out)
    with pytest.raises(ValueError, match="token_mask"):
        MaskPaddingTokens()(tokens, torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="token_mask_key"):
        MaskPaddingTokensd(["pred"])({"pred": tokens})


def test_fraction_without_num_classes_fails_at_construction():
    """The error came per sample, in the middle of an epoch (or never: K = max + 1)."""
    with pytest.raises(ValueError, match="num_classes"):
        HierarchicalPatch(64, 8, mode="fraction")
    assert HierarchicalPatch(64, 8, mode="fraction", num_classes=3).num_classes == 3


def test_depatch_leaves_the_callers_trace_alone():
    """A plain call must not pop the caller's applied_operations."""
    img = MetaTensor(torch.from_numpy(_blobs())[None] * 100)
    tokens = HierarchicalPatch(length=64, patch_size=4)(img)
    trace = list(tokens.applied_operations)
    first = Depatch()(tokens)
    assert tokens.applied_operations == trace and len(trace) == 1, "the input's trace was modified"
    assert first.applied_operations == [], "the output's trace still holds the undone patching"
    second = Depatch()(tokens)  # the same tokens can be depatched again
    assert torch.equal(first, second)
    forest, info = forest_from_trace(tokens, latest=True)
    assert tokens.applied_operations == trace and forest.length == 64 and info["mode"] == "linear"


def _two_class_map():
    """(1, 64, 64) class map with classes 0 and 2 side by side (no 1), and a forest of large leaves."""
    label = np.zeros((1, 64, 64), np.uint8)
    label[:, :, 29:] = 2
    return label, build_forest(np.zeros((64, 64)), 16)  # 16 leaves of 16 x 16


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8, torch.int64, torch.bool])
def test_depatch_of_a_class_map_never_invents_a_class(dtype):
    """Argmaxed class maps are depatched with nearest, whatever mode was recorded."""
    label, forest = _two_class_map()
    if dtype == torch.bool:
        label = label // 2
    image = MetaTensor(torch.from_numpy(label.astype(np.float32)))
    patch = HierarchicalPatch(length=16, patch_size=4)  # an image key: recorded mode "linear"
    tokens = patch(image, forest=forest)
    classes = MetaTensor(torch.from_numpy(label)).to(dtype)
    class_tokens = HierarchicalPatch(length=16, patch_size=4, mode="nearest", inverse_mode="linear")(
        classes, forest=forest
    )
    expected = set(np.unique(label).tolist())
    for out in (
        Depatch()(class_tokens),  # own record says "linear"
        Depatch()(class_tokens.as_tensor(), forest=forest),
        patch.inverse(MetaTensor(class_tokens.as_tensor()).copy_meta_from(tokens)),  # Invertd's path
    ):
        assert set(np.unique(np.asarray(out)).tolist()) <= expected
    # an explicit mode is obeyed
    linear = Depatch(mode="linear")(class_tokens.as_tensor().float(), forest=forest)
    assert not set(np.unique(linear.numpy()).tolist()) <= expected


def test_resolve_depatch_mode_rule():
    probabilities = torch.rand(2, 4, 2, 2)
    assert resolve_depatch_mode(probabilities, None, "linear") == "linear"
    assert resolve_depatch_mode(probabilities.argmax(0, keepdim=True).float(), None, "linear") == "nearest"
    assert resolve_depatch_mode(np.zeros((1, 4, 2, 2), np.int16), None, None) == "nearest"
    assert resolve_depatch_mode(torch.rand(1, 4, 2, 2), None, "linear") == "linear"  # one soft channel
    assert resolve_depatch_mode(torch.ones(2, 4, 2, 2), None, None) == "linear"  # one-hot stays linear
    assert resolve_depatch_mode(torch.zeros(1, 4, 2, 2, dtype=torch.uint8), "linear", None) == "linear"


@pytest.mark.parametrize("criterion", ["error", "edges"])
def test_split_criterion_option(criterion):
    img = np.stack([_blobs(seed=s) for s in (1,)]) * 200
    patch = HierarchicalPatch(length=160, patch_size=4, criterion=criterion)
    edges = soft_edge_map(img, 3, (50, 100))
    expected = build_forest(edges, 160, criterion=criterion, patch_size=4 if criterion == "error" else None)
    assert patch.build(img) == expected
    # the two criteria differ on this image: the option is not ignored
    other = "edges" if criterion == "error" else "error"
    assert HierarchicalPatch(length=160, patch_size=4, criterion=other).build(img) != expected
    assert HierarchicalPatch(length=160, patch_size=4).spec.criterion == "error"


def test_edge_forest_checks_edge_kind():
    from monai_shf.forest import edge_forest

    img = np.stack([_blobs(seed=2)]) * 200
    with pytest.raises(ValueError, match="edge_kind"):
        edge_forest(img, 32, edge_kind="Soft")
    with pytest.raises(ValueError, match="edge_kind"):
        HierarchicalPatch(length=16, patch_size=4, edge_kind="sobel")
    canny = edge_forest(img, 32, edge_kind="canny", patch_size=4)
    assert canny == build_forest(edge_map(img, 3, (50, 100)), 32, patch_size=4)


def test_bad_split_criterion():
    with pytest.raises(ValueError, match="criterion"):
        HierarchicalPatch(length=16, patch_size=8, criterion="entropy")


def test_depatch_and_inverse_can_return_class_maps():
    """Depatch(argmax=True) and HierarchicalPatch(inverse_argmax=True) give uint8 labels."""
    image = torch.from_numpy(np.random.default_rng(0).random((1, 64, 64)).astype(np.float32))
    forest = build_forest(np.zeros((64, 64)), 16)
    scores = torch.rand(3, 16, 8, 8)
    planes = Depatch()(scores, forest=forest)
    labels = Depatch(argmax=True)(scores, forest=forest)
    assert labels.dtype == torch.uint8 and labels.shape == (1, 64, 64)
    assert torch.equal(labels[0].long(), planes.argmax(0))
    assert torch.equal(Depatch()(scores, forest=forest, argmax=True), labels)
    patcher = HierarchicalPatch(16, 8, inverse_argmax=True)
    tokens = patcher(MetaTensor(image), forest=forest)
    pred = MetaTensor(scores, applied_operations=tokens.applied_operations)
    assert torch.equal(patcher.inverse(pred).as_tensor(), labels)
    with pytest.raises(TypeError, match="inverse_argmax"):
        HierarchicalPatch(16, 8, inverse_argmax=1)


# ---------------------------------------------------------------------------------------------
# voxel spacing


def _thick_slice_volume(shape=(64, 64, 16), seed=0):
    """A blob volume as a MetaTensor with 1 x 1 x 5 mm voxels (spheres in millimetres)."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*(np.arange(s, dtype=np.float32) for s in shape), indexing="ij")
    img = np.zeros(shape, np.float32)
    for _ in range(5):
        c = [rng.uniform(8, s - 8) for s in shape[:2]] + [rng.uniform(2, shape[2] - 2)]
        r = rng.uniform(6, 14)
        img[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (5 * (xx - c[2])) ** 2 < r**2] = rng.uniform(0.4, 1.0)
    return MetaTensor(torch.from_numpy(img[None]), affine=torch.diag(torch.tensor([1.0, 1.0, 5.0, 1.0])))


def test_spacing_meta_reads_the_pixdim_of_the_meta_tensor():
    from monai_shf.forest import edge_forest

    img = _thick_slice_volume()
    assert tuple(float(v) for v in img.pixdim) == (1.0, 1.0, 5.0)
    t = HierarchicalPatch(300, 4, spacing="meta")
    tokens = t(img)
    forest, _ = forest_from_trace(tokens)
    assert forest == edge_forest(img.numpy(), t.spec, spacing=(1.0, 1.0, 5.0))
    assert forest == forest_from_trace(HierarchicalPatch(300, 4, spacing=(1, 1, 5))(img))[0]
    voxel = forest_from_trace(HierarchicalPatch(300, 4)(img))[0]
    assert forest != voxel and voxel == edge_forest(img.numpy(), t.spec)
    assert tokens.shape == (1, 300, 4, 4, 4)
    # the same affine rotated: its column norms are still 1, 1, 5 mm
    c, s = np.cos(0.3), np.sin(0.3)
    rotation = torch.tensor([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float64)
    rotated = MetaTensor(img.as_tensor(), affine=rotation @ img.affine.double())
    assert forest_from_trace(t(rotated))[0] == forest
    # inverse: back to the image grid
    back = t.inverse(tokens)
    assert back.shape == img.shape
    assert float((back - img).abs().mean()) < 0.05


def test_spacing_option_errors_name_it():
    for bad, error in (("mm", ValueError), ((1.0, 0.0, 1.0), ValueError), ((1.0,), ValueError), (3.0, TypeError)):
        with pytest.raises(error, match="spacing"):
            HierarchicalPatch(16, 4, spacing=bad)
    with pytest.raises(TypeError, match="spacing"):  # "meta" needs the metadata
        HierarchicalPatch(16, 4, spacing="meta")(np.zeros((1, 16, 16, 8), np.float32))
    with pytest.raises(ValueError, match="spacing"):  # two sizes for a 3D image
        HierarchicalPatch(16, 4, spacing=(1.0, 2.0))(np.zeros((1, 16, 16, 8), np.float32))
    assert HierarchicalPatch(16, 4, spacing=[1, 1, 5]).spacing == (1.0, 1.0, 5.0)
