"""The two MONAI bundles, run with MONAI's own tools (ConfigWorkflow, bundle scripts, torchrun)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow, ckpt_export, verify_net_in_out

from monai_shf.bundles import bundle_path

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = {"2d": bundle_path("shf_2d_segmentation"), "3d": bundle_path("shf_3d_segmentation")}
TINY_NET = {
    "network_def#hidden_size": 32,
    "network_def#mlp_dim": 64,
    "network_def#num_layers": 1,
    "network_def#num_heads": 4,
}
TINY = {
    "2d": {"num_train": 2, "num_val": 1, "image_size": 128, "forest#length": 64, **TINY_NET},
    "3d": {"num_train": 2, "num_val": 1, "volume_size": [32, 32, 24], "forest#length": 64, **TINY_NET},
}
RUN = {"max_epochs": 1, "val_interval": 1, "num_workers": 0, "progress_bar": False}


def _files(kind: str, *names: str) -> list[str]:
    return [str(BUNDLES[kind] / "configs" / n) for n in names]


def _workflow(kind: str, names: list[str], workflow_type: str, root: Path, **overrides) -> ConfigWorkflow:
    args = dict(TINY[kind], bundle_root=str(root))
    if workflow_type == "train":
        args.update(RUN)
    args.update(overrides)
    wf = ConfigWorkflow(
        config_file=_files(kind, *names),
        meta_file=str(BUNDLES[kind] / "configs" / "metadata.json"),
        logging_file=str(BUNDLES[kind] / "configs" / "logging.conf"),
        workflow_type=workflow_type,
        **args,
    )
    return wf


REQUIRED_META = [
    "version",
    "changelog",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
    "name",
    "task",
    "description",
    "authors",
    "copyright",
    "data_source",
    "data_type",
    "image_classes",
    "label_classes",
    "pred_classes",
    "eval_metrics",
    "intended_use",
    "references",
    "network_data_format",
]


@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_bundle_layout_and_metadata(kind):
    root = BUNDLES[kind]
    for name in [
        "configs/metadata.json",
        "configs/train.yaml",
        "configs/evaluate.yaml",
        "configs/inference.yaml",
        "configs/multi_gpu_train.yaml",
        "configs/logging.conf",
        "docs/README.md",
        "LICENSE",
    ]:
        assert (root / name).is_file(), f"{kind} bundle lacks {name}"
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    assert [k for k in REQUIRED_META if k not in meta] == []
    assert meta["version"] in meta["changelog"]
    fmt = meta["network_data_format"]
    image, pred = fmt["inputs"]["image"], fmt["outputs"]["pred"]
    for field in (
        "type",
        "format",
        "num_channels",
        "spatial_shape",
        "dtype",
        "value_range",
        "is_patch_data",
        "channel_def",
    ):
        assert field in image and field in pred
    dims = 2 if kind == "2d" else 3
    assert len(image["spatial_shape"]) == 1 + dims and len(fmt["inputs"]["geom"]["spatial_shape"]) == 2


@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_check_properties(kind, tmp_path):
    train = _workflow(kind, ["train.yaml"], "train", tmp_path)
    train.initialize()
    assert train.check_properties() == []
    infer = _workflow(kind, ["inference.yaml"], "infer", tmp_path)
    infer.initialize()
    assert infer.check_properties() == []


@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_train_evaluate_infer(kind, tmp_path):
    train = _workflow(kind, ["train.yaml"], "train", tmp_path)
    train.initialize()
    train.run()
    trainer = train.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 1 and np.isfinite(float(trainer.state.output[0]["loss"]))
    assert sorted(os.listdir(tmp_path / "models")) == ["best.pt", "latest.pt"]
    # TensorBoardForestImageHandler: one picture per validation round
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "eval"), size_guidance={"images": 0})
    events.Reload()
    pictures = events.Images("validation_forest")
    assert [p.step for p in pictures] == [1] and pictures[0].width > pictures[0].height > 0
    evaluate = _workflow(kind, ["train.yaml", "evaluate.yaml"], "train", tmp_path)
    evaluate.initialize()
    evaluate.run()
    metrics = evaluate.parser.get_parsed_content("validate#evaluator").state.metrics
    assert 0.0 <= metrics["val_mean_dice"] <= 1.0 and 0.0 <= metrics["val_token_dice"] <= 1.0
    assert (tmp_path / "eval" / "metrics.csv").is_file()
    infer = _workflow(kind, ["inference.yaml"], "infer", tmp_path, **{k: v for k, v in TINY[kind].items()})
    infer.initialize()
    infer.run()
    predictions = sorted((tmp_path / "eval" / "predictions").iterdir())
    assert len(predictions) == 1
    source = train.parser.get_parsed_content("datalist")["validation"][0]["label"]
    if kind == "3d":
        import nibabel as nib

        saved, original = nib.load(str(predictions[0])), nib.load(source)
        assert saved.shape[:3] == original.shape and np.allclose(saved.affine, original.affine)
        assert set(np.unique(np.asarray(saved.dataobj))) <= {0, 1, 2}
    else:
        from PIL import Image

        assert Image.open(predictions[0]).size == Image.open(source).size
        # labels straight from depatching (uint8 class indices, no K x H x W float canvas)
        pred = infer.parser.get_parsed_content("evaluator").state.output[0]["pred"]
        assert pred.dtype == torch.uint8 and pred.shape[0] == 1 and set(np.unique(pred.numpy())) <= {0, 1}


def test_resume_continues_the_epoch_count(tmp_path):
    first = _workflow("2d", ["train.yaml"], "train", tmp_path, max_epochs=1)
    first.initialize()
    first.run()
    second = _workflow("2d", ["train.yaml"], "train", tmp_path, max_epochs=3)
    second.initialize()
    trainer = second.parser.get_parsed_content("train#trainer")
    epochs_run = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs_run.append(e.state.epoch))
    second.run()
    assert epochs_run == [2, 3], "training restarted instead of resuming"
    assert trainer.state.epoch == 3
    latest = torch.load(tmp_path / "models" / "latest.pt", weights_only=False)
    assert latest["trainer"]["iteration"] == 3 * trainer.state.epoch_length
    # the best-checkpoint tracking travels with latest.pt: a resumed run keeps a better old best.pt
    saved = latest["best_tracker"]["_saved"]  # ignite Checkpoint state: [(score, filename)]
    assert len(saved) == 1 and 0.0 <= saved[0][0] <= 1.0


def test_3d_real_data_on_another_grid_is_scored_at_its_own_resolution(tmp_path):
    """Real volumes whose spacing and orientation differ from the bundle's target: validation Dice
    is computed on the original grid, against the label as loaded."""
    import nibabel as nib

    from monai_shf.data import synthetic_organs_3d

    data = tmp_path / "real"
    (data / "imagesTr").mkdir(parents=True)
    (data / "labelsTr").mkdir()
    affine = np.diag([-0.8, -0.8, 3.0, 1.0])  # LPS-like, anisotropic
    items = []
    for i in range(2):
        image, label = synthetic_organs_3d((40, 36, 12), seed=i)
        nib.save(nib.Nifti1Image(image, affine), str(data / "imagesTr" / f"c{i}.nii.gz"))
        nib.save(nib.Nifti1Image(label, affine), str(data / "labelsTr" / f"c{i}.nii.gz"))
        items.append({"image": f"imagesTr/c{i}.nii.gz", "label": f"labelsTr/c{i}.nii.gz"})
    (data / "datalist.json").write_text(json.dumps({"training": items[:1], "validation": items[1:]}))
    wf = _workflow("3d", ["train.yaml"], "train", tmp_path / "run", datalist_file=str(data / "datalist.json"))
    wf.initialize()
    wf.run()
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    assert 0.0 <= evaluator.state.metrics["val_mean_dice"] <= 1.0
    assert evaluator.state.output[0]["pred"].shape[1:] == (40, 36, 12)


def test_torchrun_two_cpu_processes(tmp_path):
    args = {**TINY["2d"], **RUN, "bundle_root": str(tmp_path), "num_train": 2, "num_val": 2, "progress_bar": "$False"}
    import socket

    with socket.socket() as sock:  # a free loopback port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={port}",
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(_files("2d", "train.yaml", "multi_gpu_train.yaml")),
    ]
    for k, v in args.items():
        cmd += [f"--{k}", json.dumps(v) if not isinstance(v, str) else v]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # one seed per rank (torch's actual initial seed, logged by each rank), and each rank
    # caches and reads its own part of the data
    log = done.stdout + done.stderr
    seeds = dict(re.findall(r"rank (\d) of 2: seed (\d+)", log))
    assert len(seeds) == 2 and seeds["0"] != seeds["1"], log[-3000:]
    for kind in ("training", "validation"):
        parts = dict(re.findall(rf"rank (\d) of 2: 1 of 2 {kind} items: (\S+)", log))
        assert len(parts) == 2 and parts["0"] != parts["1"], f"{kind}: {parts}"
    assert (tmp_path / "models" / "latest.pt").is_file()
    state = torch.load(tmp_path / "models" / "latest.pt", weights_only=False)
    # two samples split over two ranks: one iteration per epoch on each
    assert state["trainer"]["iteration"] == 1
    assert not any(k.startswith("module.") for k in state["model"]), (
        "checkpoints hold the bare network, not the DDP wrapper"
    )


@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_verify_net_in_out_and_traced_export(kind, tmp_path):
    meta = str(BUNDLES[kind] / "configs" / "metadata.json")
    config = _files(kind, "train.yaml")[0]
    verify_net_in_out(net_id="network_def", meta_file=meta, config_file=config, device="cpu")
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config)
    net = parser.get_parsed_content("network_def").eval()
    ckpt = tmp_path / "model.pt"
    torch.save({"model": net.state_dict()}, ckpt)
    shape = json.loads(Path(meta).read_text())["network_data_format"]["inputs"]["image"]
    input_shape = [1, shape["num_channels"], *shape["spatial_shape"]]
    ckpt_export(
        net_id="network_def",
        filepath=str(tmp_path / "model.ts"),
        ckpt_file=str(ckpt),
        meta_file=meta,
        config_file=config,
        key_in_ckpt="model",
        use_trace=True,
        input_shape=input_shape,
    )
    exported = torch.jit.load(str(tmp_path / "model.ts"))
    x = torch.rand(input_shape)
    assert torch.allclose(exported(x), net(x), atol=1e-5)


def _write_png(path: Path, array: np.ndarray) -> str:
    from PIL import Image

    Image.fromarray(array).save(path)
    return str(path)


@pytest.mark.parametrize(
    "problem,match",
    [
        ("missing", "not found"),
        ("corrupt", "cannot read image"),
        ("mismatch", "spatial shape"),
        ("channels", "channel"),
    ],
)
def test_bad_data_fails_before_training(problem, match, tmp_path):
    data = tmp_path / "real"
    data.mkdir()
    image = _write_png(data / "a.png", np.zeros((64, 64, 3), np.uint8))
    label = _write_png(data / "a_mask.png", np.zeros((64, 64), np.uint8))
    if problem == "missing":
        label = str(data / "nowhere.png")
    elif problem == "corrupt":
        (data / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
        image = str(data / "bad.png")
    elif problem == "mismatch":
        label = _write_png(data / "b_mask.png", np.zeros((64, 60), np.uint8))
    else:
        image = _write_png(data / "grey.png", np.zeros((64, 64), np.uint8))
    (data / "datalist.json").write_text(json.dumps({"training": [{"image": image, "label": label}], "validation": []}))
    wf = _workflow("2d", ["train.yaml"], "train", tmp_path, datalist_file=str(data / "datalist.json"))
    with pytest.raises(Exception) as info:
        wf.initialize()
    assert match in _chain(info.value)
    assert not (tmp_path / "models").exists() or not os.listdir(tmp_path / "models"), "training started anyway"


@pytest.mark.parametrize(
    "override,match",
    [({"forest#length": 0}, "length"), ({"forest#patch_size": 0}, "patch_size"), ({"forest#length": 2.5}, "length")],
)
def test_impossible_config_overrides_fail_before_training(override, match, tmp_path):
    wf = _workflow("2d", ["train.yaml"], "train", tmp_path, **override)
    with pytest.raises(Exception) as info:
        wf.initialize()
        wf.run()
    assert match in _chain(info.value)
    assert not (tmp_path / "models" / "latest.pt").exists()


def _chain(error: BaseException) -> str:
    """The messages of an exception and of everything that caused it (MONAI wraps config errors)."""
    parts = []
    while error is not None:
        parts.append(str(error))
        error = error.__cause__ or error.__context__
    return " | ".join(parts)


def test_2d_bundle_patches_the_8bit_image_and_scales_the_tokens(tmp_path, monkeypatch):
    """The image is loaded in its own dtype (uint8), edges and forest come from the 8-bit
    values (the Canny thresholds are grey levels), and only the tokens are scaled to [0, 1]; a TIFF is read
    with tifffile (no Pillow pixel limit)."""
    import tifffile
    from monai.bundle import ConfigParser
    from PIL import Image

    from monai_shf.forest import build_forest, serialize, soft_edge_map
    from monai_shf.transforms import forest_from_trace

    rng = np.random.default_rng(0)
    rgb = np.full((96, 128, 3), 40, np.uint8)  # intensities 40..200: a min-max rescale would change the edges
    yy, xx = np.mgrid[:96, :128]
    for _ in range(12):
        cy, cx, r = rng.integers(8, 88), rng.integers(8, 120), rng.integers(4, 14)
        rgb[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = rng.integers(60, 200, 3)
    rgb[0, 0] = 200
    tifffile.imwrite(tmp_path / "a.tif", rgb)
    Image.fromarray((rgb[..., 0] > 40).astype(np.uint8)).save(tmp_path / "a_mask.png")
    item = {"image": str(tmp_path / "a.tif"), "label": str(tmp_path / "a_mask.png")}
    (tmp_path / "datalist.json").write_text(json.dumps({"training": [item], "validation": [item]}))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow would now refuse this 12288-pixel TIFF

    parser = ConfigParser()
    parser.read_config(_files("2d", "train.yaml"))
    parser.update({"bundle_root": str(tmp_path), "datalist_file": str(tmp_path / "datalist.json"), "forest#length": 64})
    pre = parser.get_parsed_content("validate#preprocessing")
    loaded = pre.transforms[0](dict(item))
    assert loaded["image"].dtype == torch.uint8 and loaded["label"].dtype == torch.uint8
    out = pre(dict(item))
    image = np.moveaxis(rgb, -1, 0).transpose(0, 2, 1)  # (C, W, H): MONAI's 2D axis order (as for PNG)
    expected = build_forest(soft_edge_map(image, 3, (50, 100)), 64, min_size=2, patch_size=8)
    forest, _ = forest_from_trace(out["image"])
    assert forest == expected, "the forest must come from the 8-bit image, not from a rescaled float copy"
    tokens = out["image"].as_tensor()
    assert tokens.dtype == torch.float32 and 0.0 <= float(tokens.min()) and float(tokens.max()) <= 1.0
    np.testing.assert_allclose(tokens.numpy(), serialize(image, forest, 8) / 255.0, atol=1e-6)


def test_readme_and_bundle_docs_say_bundles_are_code():
    from monai_shf.bundles import list_bundles

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    docs = {name: (bundle_path(name) / "docs" / "README.md").read_text() for name in list_bundles()}
    for where, text in {"README.md": readme, **docs}.items():
        assert "Bundles are code" in text and "only bundles you trust" in text, where


@pytest.mark.parametrize("override", [None, "null"])
def test_3d_bundle_forest_reads_the_spacing_after_spacingd(tmp_path, override):
    """patch_spacing: meta (default) builds the forest with the voxel size the image has after Spacingd
    (the bundle's pixdim), in training, validation and inference; null gives voxel cubes."""
    import nibabel as nib
    from monai.bundle import ConfigParser

    from monai_shf.data import synthetic_organs_3d
    from monai_shf.forest import edge_forest
    from monai_shf.transforms import HierarchicalPatchd, forest_from_trace

    image, label = synthetic_organs_3d((48, 40, 16), seed=0)
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    nib.save(nib.Nifti1Image(image, affine), str(tmp_path / "c.nii.gz"))
    nib.save(nib.Nifti1Image(label, affine), str(tmp_path / "c_label.nii.gz"))
    item = {"image": str(tmp_path / "c.nii.gz"), "label": str(tmp_path / "c_label.nii.gz")}
    for config, key in (
        ("train.yaml", "validate#preprocessing"),
        ("train.yaml", "train#preprocessing"),
        ("inference.yaml", "preprocessing"),
    ):
        parser = ConfigParser()
        parser.read_config(_files("3d", config))
        parser.update({"bundle_root": str(tmp_path), "forest#length": 128})
        if override is not None:
            parser.update({"patch_spacing": None})
        pre = parser.get_parsed_content(key)
        at = next(i for i, t in enumerate(pre.transforms) if isinstance(t, HierarchicalPatchd))
        patcher = pre.transforms[at]
        assert patcher.spacing == (None if override else "meta"), key
        if key != "validate#preprocessing":
            continue
        before = pre.transforms[:at]
        data = dict(item)
        for t in before:
            data = t(data)
        np.testing.assert_allclose(np.asarray(data["image"].pixdim), [1.5, 1.5, 2.5], rtol=1e-5)
        forest = forest_from_trace(pre(dict(item))["image"])[0]
        spacing = None if override else (1.5, 1.5, 2.5)
        assert forest == edge_forest(data["image"].numpy(), patcher.spec, spacing=spacing)
        if override is None:
            assert forest != edge_forest(data["image"].numpy(), patcher.spec)
