"""The whole-slide bundle, run with MONAI's own tools (ConfigWorkflow, torchrun), on small generated slides."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from monai_shf.bundles import bundle_path
from monai_shf.slide import open_slide, slide_dice

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = bundle_path("shf_wsi_segmentation")
TINY = {
    "num_train": 2,
    "num_val": 1,
    "slide_size": 1024,
    "forest#length": 64,
    "network_def#hidden_size": 32,
    "network_def#mlp_dim": 64,
    "network_def#num_layers": 1,
    "network_def#num_heads": 4,
}
RUN = {"max_epochs": 1, "val_interval": 1, "num_workers": 0, "progress_bar": False}


def _files(*names: str) -> list[str]:
    return [str(BUNDLE / "configs" / n) for n in names]


def _workflow(names: list[str], workflow_type: str, root: Path, **overrides) -> ConfigWorkflow:
    args = dict(TINY, bundle_root=str(root))
    if workflow_type == "train":
        args.update(RUN)
    args.update(overrides)
    return ConfigWorkflow(
        config_file=_files(*names),
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        logging_file=str(BUNDLE / "configs" / "logging.conf"),
        workflow_type=workflow_type,
        **args,
    )


def test_layout_and_metadata():
    names = ["train.yaml", "evaluate.yaml", "inference.yaml", "multi_gpu_train.yaml", "multi_gpu_inference.yaml"]
    for name in ["configs/" + n for n in names] + ["configs/metadata.json", "configs/logging.conf", "docs/README.md"]:
        assert (BUNDLE / name).is_file(), name
    assert (BUNDLE / "LICENSE").is_file()
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"] and meta["data_type"] == "tiff"
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == 3


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wsi_bundle")
    train = _workflow(["train.yaml"], "train", root)
    train.initialize()
    assert train.check_properties() == []
    train.run()
    trainer = train.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 1 and np.isfinite(float(trainer.state.output[0]["loss"]))
    return root


def test_train_validates_on_written_pyramidal_masks(trained):
    assert sorted(os.listdir(trained / "models")) == ["best.pt", "latest.pt"]
    masks = sorted((trained / "eval" / "val_masks").iterdir())
    assert [m.name for m in masks] == ["slide_002_mask.tif"]
    with open_slide(masks[0]) as mask, open_slide(trained / "data" / "slides" / "slide_002.tif") as slide:
        assert mask.shape == slide.shape == (1024, 1024) and mask.num_channels == 1
        assert mask.level_count > 1 and mask.mpp == pytest.approx(slide.mpp)


def test_evaluate_reports_full_resolution_dice_of_the_masks(trained):
    evaluate = _workflow(["train.yaml", "evaluate.yaml"], "train", trained)
    evaluate.initialize()
    evaluate.run()
    evaluator = evaluate.parser.get_parsed_content("validate#evaluator")
    metrics = evaluator.state.metrics
    assert 0.0 <= metrics["val_mean_dice"] <= 1.0 and 0.0 <= metrics["val_token_dice"] <= 1.0
    # the key metric is the mean over classes 1..K-1 of the Dice of the written mask, tile by tile
    mask = trained / "eval" / "masks" / "slide_002_mask.tif"
    dice = slide_dice(mask, trained / "data" / "slides" / "slide_002_label.tif", 3)
    assert metrics["val_mean_dice"] == pytest.approx(float(np.nanmean(dice[1:])), abs=1e-6)
    assert (trained / "eval" / "metrics.csv").is_file()


def test_inference_writes_one_mask_per_slide(trained):
    infer = _workflow(["inference.yaml"], "infer", trained, **TINY)
    infer.initialize()
    assert infer.check_properties() == []
    infer.run()
    masks = sorted((trained / "eval" / "masks").glob("*_mask.tif"))
    assert [m.name for m in masks] == ["slide_002_mask.tif"]
    with open_slide(masks[0]) as mask:
        values = mask.read(0, (0, 0), (1024, 1024))
    assert set(np.unique(values)) <= {0, 1, 2}


def _torchrun(configs: list[str], args: dict, cwd: Path) -> subprocess.CompletedProcess:
    with socket.socket() as sock:  # a free loopback port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1"]
    cmd += [f"--master_port={port}", "-m", "monai.bundle", "run", "--config_file", str(_files(*configs))]
    for k, v in args.items():
        cmd += [f"--{k}", json.dumps(v) if not isinstance(v, str) else v]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, cwd=str(cwd), env=env, capture_output=True, text=True, timeout=300)


def test_torchrun_training_and_sharded_inference(tmp_path):
    args = {**TINY, **RUN, "bundle_root": str(tmp_path), "num_train": 2, "num_val": 2, "progress_bar": "$False"}
    done = _torchrun(["train.yaml", "multi_gpu_train.yaml"], args, ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    seeds = dict(re.findall(r"rank (\d) of 2: seed (\d+)", done.stdout + done.stderr))
    assert len(seeds) == 2 and seeds["0"] != seeds["1"]
    state = torch.load(tmp_path / "models" / "latest.pt", weights_only=False)
    assert state["trainer"]["iteration"] == 1  # two slides over two ranks
    # inference over a 3-slide cohort on 2 ranks: every slide written exactly once
    datalist = json.loads((tmp_path / "data" / "datalist.json").read_text())
    cohort = {"training": datalist["training"], "testing": datalist["training"] + datalist["validation"][:1]}
    (tmp_path / "data" / "cohort.json").write_text(json.dumps(cohort))
    infer_args = {k: v for k, v in args.items() if k not in RUN or k == "num_workers"}
    infer_args["datalist_file"] = str(tmp_path / "data" / "cohort.json")
    done = _torchrun(["inference.yaml", "multi_gpu_inference.yaml"], infer_args, ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = done.stdout + done.stderr
    shards = dict(re.findall(r"rank (\d) of 2: (\d) of 3 inference items", log))
    assert sorted(shards.values()) == ["1", "2"], log[-2000:]
    masks = sorted(p.name for p in (tmp_path / "eval" / "masks").glob("*_mask.tif"))
    assert masks == ["slide_000_mask.tif", "slide_001_mask.tif", "slide_002_mask.tif"]
