"""monai_shf.transforms.dictionary: the sample-level patcher inside real MONAI pipelines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import CacheDataset, DataLoader, Dataset, MetaTensor, decollate_batch
from monai.engines import SupervisedEvaluator
from monai.handlers import MeanDice, from_engine
from monai.transforms import (
    AsDiscreted,
    Compose,
    EnsureChannelFirstd,
    Flipd,
    Invertd,
    LoadImaged,
    Orientationd,
    SaveImaged,
    ScaleIntensityd,
    Spacingd,
    SpatialPadd,
)
from monai.utils import set_determinism

from monai_shf.forest import Forest
from monai_shf.transforms import (
    Depatch,
    Depatchd,
    EdgeMapd,
    HierarchicalPatchd,
    RandHierarchicalPatchd,
    forest_from_trace,
)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1)


def _nuclei_sample(nuclei2d):
    img, mask = nuclei2d
    return {"image": MetaTensor(img[None].astype(np.float32)), "label": MetaTensor((mask[None] > 0).astype(np.uint8))}


def test_one_forest_for_every_key_and_side_keys(nuclei2d):
    t = HierarchicalPatchd(["image", "label"], length=1024, patch_size=8, mode=("area", "nearest"))
    out = t(_nuclei_sample(nuclei2d))
    assert out["image"].shape == (1, 1024, 8, 8) and out["label"].shape == (1, 1024, 8, 8)
    assert out["geom"].shape == (1024, 4) and out["geom"].dtype == torch.float32
    assert out["token_mask"].shape == (1024,) and out["token_mask"].dtype == torch.bool
    info_image = out["image"].applied_operations[-1]["extra_info"]["forest"]
    info_label = out["label"].applied_operations[-1]["extra_info"]["forest"]
    assert Forest.from_dict(info_image) == Forest.from_dict(info_label)


@pytest.mark.parametrize("nearest_interp", [False, True])
def test_invertd_undoes_patch_pad_and_flip(nuclei2d, nearest_interp):
    sample = _nuclei_sample(nuclei2d)
    pre = Compose(
        [
            Flipd(["image", "label"], spatial_axis=0),
            SpatialPadd(["image", "label"], (520, 530)),
            HierarchicalPatchd(["image", "label"], 1024, 8, mode=("area", "fraction"), num_classes=(None, 2)),
        ]
    )
    out = pre(sample)
    out["pred"] = MetaTensor(out["label"].as_tensor().clone())  # a perfect prediction, (2, L, p, p)
    inverted = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=nearest_interp)(out)
    pred = inverted["pred"]
    assert pred.shape == (2, 512, 512)
    dice = _dice(pred[1].numpy() > 0.5, nuclei2d[1] > 0)
    assert dice > (0.9 if nearest_interp else 0.96)


def test_supervised_evaluator_postprocessing_with_workers(nuclei2d):
    """Full-resolution Dice of a depatched prediction inside MONAI's evaluator, 2 loader workers."""
    img, mask = nuclei2d
    binary = (mask > 0).astype(np.float32)
    # two samples: the mask itself as the image, so an echo network is a perfect segmenter
    data = [
        {"image": binary[None][:, :, :256].copy(), "label": binary[None][:, :, :256].copy()},
        {"image": binary[None][:, :, 256:].copy(), "label": binary[None][:, :, 256:].copy()},
    ]
    pre = Compose(
        [
            EnsureChannelFirstd(["image", "label"], channel_dim=0),
            HierarchicalPatchd(["image"], 512, 8, thresholds=(50, 100)),
        ]
    )
    loader = DataLoader(Dataset(data, pre), batch_size=2, num_workers=2)

    class Echo(torch.nn.Module):
        def forward(self, x):  # (B, 1, L, p, p) -> two-class logits
            return torch.cat([4 * (0.5 - x), 4 * (x - 0.5)], dim=1)

    post = Compose(
        [
            Invertd(keys="pred", transform=pre, orig_keys="image"),
            AsDiscreted(keys="pred", argmax=True, to_onehot=2),
            AsDiscreted(keys="label", to_onehot=2),
        ]
    )
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=loader,
        network=Echo(),
        postprocessing=post,
        key_val_metric={"dice": MeanDice(include_background=False, output_transform=from_engine(["pred", "label"]))},
    )
    evaluator.run()
    assert evaluator.state.metrics["dice"] > 0.95
    pred = evaluator.state.output[0]["pred"]
    assert pred.shape == (2, 512, 256)


def test_cache_dataset_collation_and_decollate(nuclei2d):
    img, mask = nuclei2d
    items = [
        {"image": img[None, :256, :256].astype(np.float32), "label": (mask[None, :256, :256] > 0).astype(np.uint8)},
        {"image": img[None, 256:, 256:].astype(np.float32), "label": (mask[None, 256:, 256:] > 0).astype(np.uint8)},
    ]
    pre = Compose(
        [
            EnsureChannelFirstd(["image", "label"], channel_dim=0),
            HierarchicalPatchd(["image", "label"], 256, 8, mode=("area", "nearest"), padding_value=(0, 255)),
        ]
    )
    ds = CacheDataset(items, pre, num_workers=0, progress=False)
    batch = next(iter(DataLoader(ds, batch_size=2, num_workers=2)))
    assert batch["image"].shape == (2, 1, 256, 8, 8) and batch["label"].shape == (2, 1, 256, 8, 8)
    assert batch["geom"].shape == (2, 256, 4) and batch["token_mask"].shape == (2, 256)
    items_back = decollate_batch(batch)
    for item, original in zip(items_back, items):
        back = pre.inverse(item)
        np.testing.assert_allclose(back["image"].numpy(), original["image"], atol=60)  # area tokens, linear back
        assert back["image"].shape == (1, 256, 256)


def test_rand_patch_is_seeded_and_varies(nuclei2d):
    sample = _nuclei_sample(nuclei2d)

    def forests(seed):
        t = RandHierarchicalPatchd(["image", "label"], 512, 8, mode=("area", "nearest"))
        t.set_random_state(seed)
        draws = []
        for _ in range(4):
            out = t(sample)
            draws.append(
                (
                    t.drawn_spec.edges.kernel_size,
                    t.drawn_spec.edges.thresholds,
                    Forest.from_dict(out["label"].applied_operations[-1]["extra_info"]["forest"]),
                )
            )
        return draws, t, out

    a, t, out = forests(7)
    b, _, _ = forests(7)
    assert [(k, th) for k, th, _ in a] == [(k, th) for k, th, _ in b]
    assert all(fa == fb for (_, _, fa), (_, _, fb) in zip(a, b))
    assert len({(k, th) for k, th, _ in a}) > 1, "parameters must be drawn per sample"
    for k, (low, high), _ in a:
        assert k in (1, 3, 5, 7) and 50 <= low < 100 and high == low + 50
    back = t.inverse(out)
    assert back["label"].shape == (1, 512, 512)
    set_determinism(seed=3)
    c = RandHierarchicalPatchd(["image"], 64, 8)
    set_determinism(seed=None)
    assert c.R is not None


def test_invertd_through_the_random_patcher_with_several_keys(nuclei2d):
    pre = Compose([RandHierarchicalPatchd(["image", "label"], 256, 8, mode=("area", "nearest"))])
    out = pre(_nuclei_sample(nuclei2d))
    out["pred"] = MetaTensor(torch.rand(2, 256, 8, 8))
    assert Invertd(keys="pred", transform=pre, orig_keys="image")(out)["pred"].shape == (2, 512, 512)


def test_score_key_and_edge_mapd(nuclei2d):
    sample = _nuclei_sample(nuclei2d)
    with_edges = EdgeMapd("image", kernel_size=3, output_keys="edges")(sample)
    assert with_edges["edges"].shape == (1, 512, 512)
    a = HierarchicalPatchd("label", 256, 8, score_key="edges", mode="nearest")(with_edges)
    b = HierarchicalPatchd("label", 256, 8, mode="nearest")(sample)
    assert torch.equal(a["label"], b["label"])


def test_depatchd_with_ref_key(nuclei2d):
    sample = _nuclei_sample(nuclei2d)
    out = HierarchicalPatchd(["image", "label"], 256, 8, mode=("area", "nearest"))(sample)
    out["pred"] = torch.rand(3, 256, 8, 8)
    done = Depatchd(["pred", "label"], ref_key="image", mode=(None, "nearest"))(out)
    assert done["pred"].shape == (3, 512, 512) and done["label"].shape == (1, 512, 512)
    assert len(done["image"].applied_operations) == 1, "the reference trace is read, not consumed"
    assert _dice(done["label"][0].numpy(), nuclei2d[1] > 0) > 0.85


def test_save_after_invert_keeps_geometry_3d(mni152_dir, tmp_path):
    """Real 3D data: orientation + spacing + octree patching, inverted and written as NIfTI."""
    import nibabel as nib

    t1 = str(mni152_dir / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    gm = str(mni152_dir / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz")
    base = [
        LoadImaged(["image", "label"], image_only=True),
        EnsureChannelFirstd(["image", "label"]),
        Orientationd(["image", "label"], axcodes="RAS", labels=None),
        Spacingd(["image", "label"], pixdim=(4.0, 4.0, 4.0), mode=("bilinear", "bilinear")),
        ScaleIntensityd("image"),
    ]
    patch = HierarchicalPatchd(["image", "label"], 512, 4, mode="area", edge_method="slicewise", thresholds=(20, 40))
    pre = Compose(base + [patch])
    data = pre({"image": t1, "label": gm})
    assert data["image"].shape == (1, 512, 4, 4, 4)
    data["pred"] = MetaTensor(data["label"].as_tensor().clone())
    post = Compose(
        [
            Invertd(keys="pred", transform=pre, orig_keys="image"),
            SaveImaged(
                keys="pred", output_dir=str(tmp_path), output_postfix="seg", separate_folder=False, print_log=False
            ),
        ]
    )
    out = post(data)
    written = list(tmp_path.glob("*.nii.gz"))
    assert len(written) == 1
    saved, original = nib.load(str(written[0])), nib.load(gm)
    assert saved.shape[:3] == original.shape
    np.testing.assert_allclose(saved.affine, original.affine, atol=1e-4)
    # the same pipeline without the patching: what the 4 mm grid alone keeps of the thin cortex
    plain = Compose(base)
    ref = plain({"image": t1, "label": gm})
    ref["pred"] = MetaTensor(ref["label"].as_tensor().clone())
    ref_pred = np.asarray(Invertd(keys="pred", transform=plain, orig_keys="image")(ref)["pred"][0])
    depatched = np.asarray(out["pred"][0])
    assert _dice(depatched > 0.5, ref_pred > 0.5) > 0.85


def test_3d_itk_edges_on_real_data(mni152_dir):
    import nibabel as nib

    t1 = nib.load(str(mni152_dir / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")).get_fdata(dtype=np.float32)
    vol = t1[40:88, 60:108, 50:98]  # a 48^3 block of the brain: the N-D Canny is slow
    out = HierarchicalPatchd("image", 400, 4, edge_method="itk")({"image": vol[None]})
    assert out["image"].shape == (1, 400, 4, 4, 4)
    assert out["token_mask"].sum() >= 400 - 6


@pytest.mark.parametrize(
    "build,data,error,match",
    [
        (
            lambda: HierarchicalPatchd("image", 64, 8, ref_key="img"),
            {"image": np.zeros((1, 32, 32))},
            ValueError,
            "ref_key",
        ),
        (
            lambda: HierarchicalPatchd(["image", "label"], 64, 8),
            {"image": np.zeros((1, 32, 32)), "label": np.zeros((1, 32, 30))},
            ValueError,
            "label",
        ),
        (
            lambda: HierarchicalPatchd("image", 64, 8, score_key="edges"),
            {"image": np.zeros((1, 32, 32))},
            ValueError,
            "score_key",
        ),
        (lambda: HierarchicalPatchd("image", 64, 8), {"image": np.zeros((32, 32))}, ValueError, "dimensions"),
        (lambda: HierarchicalPatchd("image", 64, 8), {"image": np.full((1, 32, 32), np.nan)}, ValueError, "NaN"),
        (lambda: HierarchicalPatchd("image", 64, 8), {"image": np.zeros((1, 0, 32))}, ValueError, "empty"),
    ],
)
def test_bad_data(build, data, error, match):
    with pytest.raises(error, match=match):
        build()(data)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(mode="cubic"), ValueError, "mode"),
        (dict(mode=("area", "nearest"), inverse_mode=("linear", "cubic")), ValueError, "inverse_mode"),
        (dict(num_classes=1.5), TypeError, "num_classes"),
        (dict(length=-1), ValueError, "length"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    args = dict(keys=["image", "label"], length=64, patch_size=8)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        HierarchicalPatchd(**args)
    with pytest.raises((ValueError, TypeError)):
        RandHierarchicalPatchd(["image"], 64, 8, kernel_sizes=(2, 3))


@pytest.mark.parametrize("cls", [HierarchicalPatchd, RandHierarchicalPatchd])
def test_fraction_without_num_classes_fails_at_construction(cls):
    """The error came per sample, in the middle of an epoch (or never: K = max + 1)."""
    with pytest.raises(ValueError, match="num_classes"):
        cls(["image", "label"], 64, 8, mode=["area", "fraction"])
    with pytest.raises(ValueError, match="num_classes"):
        cls(["label"], 64, 8, mode="fraction")
    cls(["label"], 64, 8, mode="fraction", num_classes=3)  # the first key may be the fraction key


def test_depatchd_leaves_the_input_alone_and_keeps_classes():
    """Depatchd does not pop the caller's trace, and an argmaxed (float)
    prediction is depatched with nearest even though the reference key recorded linear."""
    label = np.zeros((1, 64, 64), np.uint8)
    label[:, :, 29:] = 2
    image = label.astype(np.float32) * 100
    pre = HierarchicalPatchd(["image", "label"], 16, 4, mode=("area", "fraction"), num_classes=(None, 3))
    out = pre({"image": image, "label": label})
    image_trace = list(out["image"].applied_operations)
    out["pred"] = AsDiscreted(keys="label", argmax=True)({"label": out["label"]})["label"]  # float (1, L, p, p)
    done = Depatchd(["pred", "image"], ref_key="image")(out)
    assert out["image"].applied_operations == image_trace, "Depatchd modified the input's trace"
    assert done["image"].applied_operations == [] and done["image"].shape == (1, 64, 64)
    assert set(np.unique(done["pred"].numpy()).tolist()) <= {0.0, 2.0}
    inverted = Invertd(keys="pred", transform=pre, orig_keys="image")(out)
    assert set(np.unique(inverted["pred"].numpy()).tolist()) <= {0.0, 2.0}


def test_rand_patcher_is_the_deterministic_patcher_with_drawn_parameters(nuclei2d):
    """A subclass (one constructor), the same forest as HierarchicalPatchd with the drawn
    parameters, and Invertd through it keeps working."""
    assert issubclass(RandHierarchicalPatchd, HierarchicalPatchd)
    sample = _nuclei_sample(nuclei2d)
    rand = RandHierarchicalPatchd(["image", "label"], 256, 8, mode=("area", "nearest"), fill="pad", min_size=4)
    rand.set_random_state(5)
    out = rand(sample)
    fixed = HierarchicalPatchd(
        ["image", "label"],
        256,
        8,
        mode=("area", "nearest"),
        fill="pad",
        min_size=4,
        kernel_size=rand.drawn_spec.edges.kernel_size,
        thresholds=rand.drawn_spec.edges.thresholds,
    )(sample)
    assert torch.equal(out["label"], fixed["label"]) and torch.equal(out["geom"], fixed["geom"])
    assert rand.spec.fill == "pad" and rand.spec.min_size == 4
    pre = Compose([rand])
    out["pred"] = MetaTensor(torch.rand(2, 256, 8, 8))
    assert Invertd(keys="pred", transform=pre, orig_keys="image")(out)["pred"].shape == (2, 512, 512)
    with pytest.raises(TypeError, match="kernel_size"):
        RandHierarchicalPatchd("image", 64, 8, kernel_size=3)


def test_fill_uniform_uses_the_budget_and_unknown_fill_is_an_error(nuclei2d):
    sample = _nuclei_sample(nuclei2d)
    uniform = HierarchicalPatchd("image", 256, 8, fill="uniform", thresholds=(250, 255))(sample)
    assert bool(uniform["token_mask"].all())
    with pytest.raises(ValueError, match="fill must be one of"):
        HierarchicalPatchd("image", 256, 8, fill="area")
    with pytest.raises(ValueError, match="fill must be one of"):
        RandHierarchicalPatchd("image", 64, 8, fill="area")


def test_split_criterion_through_the_dictionary_transforms(nuclei2d):
    from monai_shf.forest import build_forest, edge_map, soft_edge_map

    sample = _nuclei_sample(nuclei2d)
    edges = soft_edge_map(sample["image"], 3, (50, 100))

    def forest_of(out):
        return Forest.from_dict(out["label"].applied_operations[-1]["extra_info"]["forest"])

    for criterion, cap in (("error", 8), ("edges", None)):
        expected = build_forest(edges, 256, criterion=criterion, patch_size=cap)
        out = HierarchicalPatchd(["image", "label"], 256, 8, mode=("area", "nearest"), criterion=criterion)(sample)
        assert forest_of(out) == expected
        rand = RandHierarchicalPatchd(
            ["image", "label"],
            256,
            8,
            mode=("area", "nearest"),
            kernel_sizes=(3,),
            low_range=(50, 51),
            criterion=criterion,
        )
        assert forest_of(rand(sample)) == expected
    default = HierarchicalPatchd(["image", "label"], 256, 8, mode=("area", "nearest"))(sample)
    assert forest_of(default) == build_forest(edges, 256, criterion="error", patch_size=8)
    # the paper's configuration: binary Canny edges and the edge-count criterion
    paper = HierarchicalPatchd(
        ["image", "label"], 256, 8, mode=("area", "nearest"), criterion="edges", edge_kind="canny"
    )
    assert forest_of(paper(sample)) == build_forest(edge_map(sample["image"], 3, (50, 100)), 256, criterion="edges")
    assert forest_of(paper(sample)) != forest_of(default)
    rand_paper = RandHierarchicalPatchd(
        ["image", "label"], 256, 8, mode=("area", "nearest"), kernel_sizes=(3,), low_range=(50, 51), edge_kind="canny"
    )
    assert forest_of(rand_paper(sample)) == build_forest(edge_map(sample["image"], 3, (50, 100)), 256, patch_size=8)
    for bad in (HierarchicalPatchd, RandHierarchicalPatchd):
        with pytest.raises(ValueError, match="edge_kind"):
            bad(["image"], 64, 8, edge_kind="Soft")
    with pytest.raises(ValueError, match="criterion"):
        HierarchicalPatchd(["image"], 64, 8, criterion="entropy")
    with pytest.raises(ValueError, match="criterion"):
        RandHierarchicalPatchd(["image"], 64, 8, criterion="entropy")


def test_argmax_depatching_gives_labels_without_a_float_canvas(nuclei2d):
    """Depatch(d)(argmax=True) and HierarchicalPatchd(inverse_argmax=...) through Invertd
    return (1, *spatial) uint8 class indices, the argmax of the linearly depatched scores."""
    pre = Compose([HierarchicalPatchd(["image", "label"], 256, 8, mode=("area", "fraction"), num_classes=(None, 3))])
    labels = Compose(
        [
            HierarchicalPatchd(
                ["image", "label"],
                256,
                8,
                mode=("area", "fraction"),
                num_classes=(None, 3),
                inverse_argmax=(True, False),
            )
        ]
    )
    sample = _nuclei_sample(nuclei2d)
    sample["label"] = sample["label"] + MetaTensor(
        (torch.arange(512) > 300).to(torch.uint8)[None, None].expand(1, 512, 512)
    )
    scores = torch.rand(3, 256, 8, 8)
    scores[:, :, 2:6] = pre(sample)["label"].as_tensor()[:, :, 2:6] * 4  # a structured prediction
    out, out_labels = pre(sample), labels(sample)
    out["pred"], out_labels["pred"] = MetaTensor(scores), MetaTensor(scores)
    reference = Invertd("pred", pre, orig_keys="image", nearest_interp=False)(out)["pred"]
    assert reference.shape == (3, 512, 512) and reference.dtype == torch.float32
    expected = reference.argmax(0, keepdim=True)
    inverted = Invertd("pred", labels, orig_keys="image", nearest_interp=False)(out_labels)["pred"]
    assert inverted.shape == (1, 512, 512) and inverted.dtype == torch.uint8
    assert (inverted.as_tensor().long() != expected.as_tensor()).float().mean() < 1e-3  # ties aside
    done = Depatchd("pred", ref_key="image", argmax=True)(out)
    assert done["pred"].dtype == torch.uint8 and torch.equal(done["pred"].as_tensor(), inverted.as_tensor())
    assert torch.equal(
        Depatch(argmax=True)(scores, forest=forest_from_trace(out["image"])[0]), done["pred"].as_tensor()
    )
    # the setting is per key: the label key kept its plain inverse (fractions)
    assert out_labels["label"].applied_operations[-1]["extra_info"]["argmax"] is False
    with pytest.raises(ValueError, match="C >= 2"):
        Depatch(argmax=True)(scores[:1], forest=forest_from_trace(out["image"])[0])
    with pytest.raises(TypeError, match="inverse_argmax"):
        HierarchicalPatchd("image", 64, 8, inverse_argmax="yes")


def test_every_dictionary_transform_has_the_monai_aliases():
    import monai_shf.transforms as transforms
    from monai_shf.transforms import dictionary

    for name in ("EdgeMap", "HierarchicalPatch", "RandHierarchicalPatch", "Depatch", "MaskPaddingTokens"):
        for alias in (f"{name}D", f"{name}Dict"):
            assert getattr(dictionary, alias) is getattr(dictionary, f"{name}d"), alias
            assert alias in dictionary.__all__ and alias in transforms.__all__, alias


def test_label_value_of_num_classes_names_the_file():
    image = MetaTensor(torch.rand(1, 32, 32), meta={"filename_or_obj": "/data/case_7.nii.gz"})
    label = MetaTensor(torch.zeros(1, 32, 32, dtype=torch.uint8), meta={"filename_or_obj": "/data/case_7_seg.nii.gz"})
    label[0, :4, :4] = 2
    patch = HierarchicalPatchd(["image", "label"], 16, 4, mode=("area", "fraction"), num_classes=(None, 2))
    with pytest.raises(
        ValueError, match="data\\['label'\\] \\(/data/case_7_seg.nii.gz\\): label values .*num_classes=2"
    ):
        patch({"image": image, "label": label})


@pytest.mark.parametrize("spacing", ["meta", (1.0, 1.0, 5.0), None])
def test_invertd_round_trip_with_the_spacing_of_the_image(spacing):
    """One spacing-aware forest for image and label (read from the image's pixdim (1, 1, 5)); Invertd
    depatches a perfect prediction back to the volume's grid."""
    rng = np.random.default_rng(3)
    shape = (64, 64, 16)
    zz, yy, xx = np.meshgrid(*(np.arange(s, dtype=np.float32) for s in shape), indexing="ij")
    label = np.zeros(shape, np.uint8)
    for _ in range(6):
        c = (rng.uniform(8, 56), rng.uniform(8, 56), rng.uniform(2, 14))
        label[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (5 * (xx - c[2])) ** 2 < rng.uniform(6, 14) ** 2] = 1
    affine = torch.diag(torch.tensor([1.0, 1.0, 5.0, 1.0]))
    sample = {
        "image": MetaTensor(torch.from_numpy(label[None].astype(np.float32)), affine=affine),
        "label": MetaTensor(torch.from_numpy(label[None]), affine=affine),
    }
    pre = Compose(
        [
            Flipd(["image", "label"], spatial_axis=2),
            HierarchicalPatchd(
                ["image", "label"], 400, 4, mode=("area", "fraction"), num_classes=(None, 2), spacing=spacing
            ),
        ]
    )
    assert pre.transforms[-1].spacing == spacing
    out = pre(sample)
    forest = forest_from_trace(out["image"])[0]
    assert forest == forest_from_trace(out["label"])[0]
    boxes = forest.sizes[:, 2] < forest.sizes[:, 0]
    assert boxes.all() if spacing is not None else not boxes.any()
    assert out["geom"].shape == (400, 6)
    out["pred"] = MetaTensor(out["label"].as_tensor().clone())  # a perfect prediction, (2, L, p, p, p)
    pred = Invertd(keys="pred", transform=pre, orig_keys="image")(out)["pred"]
    assert pred.shape == (2,) + shape
    assert _dice(pred[1].numpy() > 0.5, label) > 0.9
