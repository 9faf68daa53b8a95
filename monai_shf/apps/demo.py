"""The demos behind ``monai-shf demo`` and ``monai-shf patch-demo``.

``training_demo`` trains, evaluates and runs the shipped 2D bundle (a small network) on its generated
dataset under an output folder (the bundle's ``bundle_root``), then draws input / forest / prediction /
truth. ``patching_demo`` patches the real nuclei image (or a generated one) and reports the depatching
fidelity of a perfect prediction.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from monai_shf.bundles import bundle_path

__all__ = ["find_nuclei2d", "patching_demo", "demo_figure", "training_demo"]


def find_nuclei2d() -> Path | None:
    """The nuclei2d folder (see :func:`monai_shf.utils.find_real_data`)."""
    from monai_shf.utils import find_real_data

    return find_real_data("nuclei2d", ("img2d.tif", "mask2d.tif"))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2.0 * (a & b).sum() / max(int(a.sum() + b.sum()), 1))


def patching_demo(
    output_dir: Path,
    length: int,
    patch_size: int,
    kernel_size: int,
    thresholds: tuple[float, float],
    edge_kind: str = "soft",
    criterion: str = "error",
) -> dict:
    from monai_shf.data import synthetic_tissue_2d
    from monai_shf.forest import ForestSpec, build_forest, deserialize, score_map, serialize
    from monai_shf.visualize import forest_overlay, panels, save_png, to_rgb

    spec = ForestSpec.create(
        length=length,
        patch_size=patch_size,
        kernel_size=kernel_size,
        thresholds=thresholds,
        edge_kind=edge_kind,
        criterion=criterion,
    )
    folder = find_nuclei2d()
    if folder is not None:
        import tifffile

        image = tifffile.imread(folder / "img2d.tif")[None]
        label = (tifffile.imread(folder / "mask2d.tif") > 0).astype(np.uint8)[None]
        source = f"real: {folder} (2018 DSB nuclei, {image.shape[1]}x{image.shape[2]})"
    else:
        image, label = synthetic_tissue_2d(1024, seed=0)
        label = (label > 0).astype(np.uint8)
        source = "generated tissue image 1024x1024 (real data not found: set MONAI_SHF_DATA)"
    t0 = time.perf_counter()
    # soft edges + the expected-error criterion: the transforms' defaults; canny + edges: the paper's
    edges = score_map(image, spec.edges)
    t1 = time.perf_counter()
    forest = build_forest(edges, spec)
    t2 = time.perf_counter()
    tokens = serialize(image, forest, patch_size)
    soft = serialize(label, forest, patch_size, mode="fraction", num_classes=2)
    t3 = time.perf_counter()
    probs = deserialize(soft, forest, mode="linear")
    t4 = time.perf_counter()
    hard = deserialize(serialize(label, forest, patch_size, mode="nearest"), forest, mode="nearest")
    gt = label[0] > 0
    result = {
        "source": source,
        "leaves": forest.num_leaves,
        "length": forest.length,
        "padding": forest.num_padding,
        "leaf_sides": f"{int(forest.sizes.min())}..{int(forest.sizes.max())}",
        "compression": float(np.prod(forest.spatial_shape)) / (forest.num_leaves * patch_size**forest.spatial_dims),
        "dice_soft_linear": _dice(probs[1] > 0.5, gt),
        "dice_hard_nearest": _dice(hard[0] > 0.5, gt),
        "ms_edges": 1e3 * (t1 - t0),
        "ms_build": 1e3 * (t2 - t1),
        "ms_serialize": 1e3 * (t3 - t2),
        "ms_deserialize": 1e3 * (t4 - t3),
        "token_shape": tuple(tokens.shape),
    }
    figure = panels(
        [to_rgb(image), forest_overlay(image, forest), to_rgb(probs[1:2]), to_rgb(label.astype(np.float32))],
        ["input", f"forest: {forest.num_leaves} leaves", "depatched (perfect tokens)", "ground truth"],
    )
    result["figure"] = str(save_png(output_dir / "forest_overlay.png", figure))
    return result


def demo_figure(preprocessing: Any, item: dict, pred_path: str | Path) -> tuple[np.ndarray, Any]:
    """The demo's figure of one sample: input, forest, depatched prediction, ground truth.

    The forest is the one the network saw: ``preprocessing`` (a ``Compose`` with a
    ``HierarchicalPatchd``, e.g. the 2D bundle's ``validate#preprocessing``) runs on ``item`` up to
    that patcher, which builds the forest from the sample it receives, in the pipeline's array orientation (MONAI's
    PIL reader loads an ``H x W`` PNG as ``(C, W, H)``, x first). The prediction is loaded by the same
    reader, so all four panels share that orientation; each is turned back to the file's ``(H, W)`` for
    display.

    Args:
        preprocessing: a MONAI ``Compose`` holding a ``HierarchicalPatchd`` (the last one is used).
        item: a datalist entry with ``"image"`` and ``"label"`` file paths.
        pred_path: the depatched prediction file of ``item``.

    Returns:
        ``(figure, forest)``: an ``(h, w, 3)`` uint8 picture and the :class:`~monai_shf.forest.Forest`
        over the pipeline's spatial shape.
    """
    from monai.transforms import Compose, LoadImage

    from monai_shf.transforms import HierarchicalPatchd
    from monai_shf.visualize import forest_overlay, panels, to_rgb

    steps = list(preprocessing.transforms)
    at = [i for i, t in enumerate(steps) if isinstance(t, HierarchicalPatchd)]
    if not at:
        raise ValueError("preprocessing has no HierarchicalPatchd: there is no forest to show.")
    patcher = steps[at[-1]]
    sample = Compose(steps[: at[-1]])(dict(item))  # what the patcher receives (later steps act on tokens)
    forest = patcher.forest(sample)
    pred = LoadImage(image_only=True, ensure_channel_first=True)(str(pred_path))

    def shown(rgb: np.ndarray) -> np.ndarray:  # (x, y, 3) in the pipeline's order -> (y, x, 3) as in the file
        return np.ascontiguousarray(rgb.swapaxes(0, 1))

    figure = panels(
        [
            shown(to_rgb(sample["image"])),
            shown(forest_overlay(sample["image"], forest)),
            shown(to_rgb(pred.float())),
            shown(to_rgb(sample["label"].float())),
        ],
        ["input", f"forest: {forest.num_leaves} leaves", "prediction (depatched)", "ground truth"],
    )
    return figure, forest


# the demo's small network and schedule: a minute on 2 CPU cores
_DEMO_NETWORK = {
    "network_def#hidden_size": 128,
    "network_def#mlp_dim": 256,
    "network_def#num_layers": 4,
    "network_def#num_heads": 4,
}
# what inference.yaml shares with train.yaml (it has no training schedule)
_INFERENCE_KEYS = ("bundle_root", "num_train", "num_val", "image_size", *_DEMO_NETWORK)


def _demo_workflow(files: list[str], kind: str, overrides: dict) -> Any:
    """An initialised ``ConfigWorkflow`` of the shipped 2D bundle's ``files`` with ``overrides``."""
    from monai.bundle import ConfigWorkflow

    configs = bundle_path("shf_2d_segmentation") / "configs"
    workflow = ConfigWorkflow(
        config_file=[str(configs / f) for f in files],
        workflow_type=kind,
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        **overrides,
    )
    workflow.initialize()
    return workflow


def training_demo(output_dir: Path, max_epochs: int, num_train: int, image_size: int) -> dict:
    """Train, evaluate and run inference with the shipped 2D bundle (small network) under ``output_dir``
    (the runs' ``bundle_root``), then draw the first validation image's figure."""
    import warnings

    import torch
    from PIL import Image

    from monai_shf.visualize import save_png

    torch.set_num_threads(max(1, torch.get_num_threads()))
    overrides = {
        "bundle_root": str(output_dir.resolve()),
        "max_epochs": max_epochs,
        "val_interval": max(1, max_epochs // 4),
        "num_train": num_train,
        "num_val": 2,
        "image_size": image_size,
        **_DEMO_NETWORK,
        "learning_rate": 5e-4,
        "resume": False,
        "progress_bar": False,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        train = _demo_workflow(["train.yaml"], "train", overrides)
        train.run()
        t1 = time.perf_counter()
        evaluate = _demo_workflow(["train.yaml", "evaluate.yaml"], "train", overrides)
        evaluate.run()
        metrics = dict(evaluate.parser.get_parsed_content("validate#evaluator").state.metrics)
        infer_overrides = {k: v for k, v in overrides.items() if k in _INFERENCE_KEYS}
        _demo_workflow(["inference.yaml"], "infer", infer_overrides).run()
    item = train.parser.get_parsed_content("datalist")["validation"][0]
    pred_path = output_dir / "eval" / "predictions" / (Path(item["image"]).stem + "_seg.png")
    # the forest of the figure is the one the validation pipeline built
    figure, _ = demo_figure(train.parser.get_parsed_content("validate#preprocessing"), item, pred_path)
    pred, truth = np.asarray(Image.open(pred_path)), np.asarray(Image.open(item["label"]))
    return {
        "metrics": metrics,
        "train_seconds": t1 - t0,
        "figure": str(save_png(output_dir / "demo_figure.png", figure)),
        "pred_path": str(pred_path),
        "dice_figure_image": _dice(pred > 0, truth > 0),
    }
