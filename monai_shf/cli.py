"""``monai-shf`` command line.

``monai-shf demo``: train the 2D bundle for a few epochs on its embedded generated dataset, evaluate
it at full resolution (after depatching), and write a figure input / forest / prediction / truth.
``monai-shf patch-demo``: patch a real image (``shared/data/nuclei2d`` when present, else a generated
tissue image), print leaves, compression and the depatching Dice of a perfect prediction.
``monai-shf datalist``: write a MONAI datalist JSON for a folder layout (``imagesTr``/``labelsTr`` or
image + mask files side by side).
``monai-shf make-slide OUT --size N``: a generated pyramidal RGB test slide (JPEG tiles) and its label
slide, rendered tile by tile from real tissue texture (``shared/data/ihc2d``).
``monai-shf figure IMAGE LABEL``: the paper's Figure 1 for any image: input, ground truth, the
reconstructed mask (upper bound), the forest, token strips, and with ``--checkpoint`` the predicted
tokens and the depatched prediction.
``monai-shf segment-slide SLIDE --out MASK.tif``: segment a whole slide with an SHF ViT (a bundle's
network and checkpoint) into a pyramidal mask, never loading the slide whole
(:func:`monai_shf.inference.segment_slide`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from monai_shf.utils import foreground_dice

__all__ = ["main", "find_nuclei2d", "patching_demo", "training_demo", "demo_figure", "shf_figure"]


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
    from monai_shf.forest import EDGE_KINDS, build_forest, deserialize, score_map, serialize
    from monai_shf.validation import check_choice
    from monai_shf.visualize import forest_overlay, panels, save_png, to_rgb

    edge_kind = check_choice(edge_kind, "edge_kind", EDGE_KINDS)
    folder = find_nuclei2d()
    if folder is not None:
        import tifffile

        image = tifffile.imread(folder / "img2d.tif")[None]
        label = (tifffile.imread(folder / "mask2d.tif") > 0).astype(np.uint8)[None]
        source = f"real: {folder} (2018 DSB nuclei, {image.shape[1]}x{image.shape[2]})"
    else:
        image, label = synthetic_tissue_2d(1024, seed=0)
        label = (label > 0).astype(np.uint8)
        source = "generated tissue image 1024x1024 (shared/data not found)"
    t0 = time.perf_counter()
    # soft edges + the expected-error criterion: the transforms' defaults; canny + edges: the paper's
    edges = score_map(image, edge_kind, kernel_size, thresholds)
    t1 = time.perf_counter()
    forest = build_forest(edges, length, criterion=criterion, patch_size=patch_size)
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


BUNDLE_2D = Path(__file__).resolve().parents[1] / "bundles" / "shf_2d_segmentation"


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


def training_demo(output_dir: Path, max_epochs: int, num_train: int, image_size: int) -> dict:
    """Train, evaluate and run inference with the 2D bundle (small network) under ``output_dir``."""
    import warnings

    import torch
    from monai.bundle import ConfigWorkflow

    from monai_shf.visualize import save_png

    configs = BUNDLE_2D / "configs"
    if not configs.is_dir():
        raise SystemExit(f"the 2D bundle is not at {configs}; run the demo from a clone of the repository.")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    overrides = {
        "bundle_root": str(output_dir.resolve()),
        "max_epochs": max_epochs,
        "val_interval": max(1, max_epochs // 4),
        "num_train": num_train,
        "num_val": 2,
        "image_size": image_size,
        "network_def#hidden_size": 128,
        "network_def#mlp_dim": 256,
        "network_def#num_layers": 4,
        "network_def#num_heads": 4,
        "learning_rate": 5e-4,
        "resume": False,
        "progress_bar": False,
    }
    common = dict(meta_file=str(configs / "metadata.json"), logging_file=str(configs / "logging.conf"))

    def workflow(files: list[str], kind: str, keys: tuple[str, ...] | None = None) -> ConfigWorkflow:
        chosen = overrides if keys is None else {k: v for k, v in overrides.items() if k in keys}
        wf = ConfigWorkflow(config_file=[str(configs / f) for f in files], workflow_type=kind, **common, **chosen)
        wf.initialize()
        return wf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        train = workflow(["train.yaml"], "train")
        train.run()
        t1 = time.perf_counter()
        evaluate = workflow(["train.yaml", "evaluate.yaml"], "train")
        evaluate.run()
        metrics = dict(evaluate.parser.get_parsed_content("validate#evaluator").state.metrics)
        infer = workflow(
            ["inference.yaml"],
            "infer",
            keys=(
                "bundle_root",
                "num_train",
                "num_val",
                "image_size",
                "network_def#hidden_size",
                "network_def#mlp_dim",
                "network_def#num_layers",
                "network_def#num_heads",
            ),
        )
        infer.run()
    # a figure of the first validation image, with the forest its validation pipeline built
    from PIL import Image

    datalist = train.parser.get_parsed_content("datalist")
    item = datalist["validation"][0]
    truth = np.asarray(Image.open(item["label"]))
    pred_path = output_dir / "eval" / "predictions" / (Path(item["image"]).stem + "_seg.png")
    pred = np.asarray(Image.open(pred_path))
    figure, _ = demo_figure(train.parser.get_parsed_content("validate#preprocessing"), item, pred_path)
    path = save_png(output_dir / "demo_figure.png", figure)
    return {
        "metrics": metrics,
        "train_seconds": t1 - t0,
        "figure": str(path),
        "pred_path": str(pred_path),
        "dice_figure_image": _dice(pred > 0, truth > 0),
    }


def _make_slide_command(args: argparse.Namespace) -> int:
    import resource

    from monai_shf.slide import make_slide

    size = args.size[0] if len(args.size) == 1 else tuple(args.size)
    start = time.perf_counter()
    slide, label = make_slide(
        args.out,
        size,
        tile=args.tile,
        seed=args.seed,
        label_out=False if args.no_label else args.label_out,
        mpp=args.mpp,
    )
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)
    print(f"slide  {slide}  ({slide.stat().st_size / 1e6:.1f} MB)")
    if label is not None:
        print(f"label  {label}  ({label.stat().st_size / 1e6:.1f} MB)")
    print(f"time   {seconds:.1f} s, peak memory {peak:.2f} GiB")
    return 0


def _figure_network(parser, checkpoint: Path, in_channels: int):
    """The bundle's ``network_def`` with the weights of ``checkpoint`` (a state dict, or a bundle
    checkpoint holding one under ``"model"``); loaded as data (``weights_only=True``)."""
    import torch

    expected = int(parser["in_channels"])
    if in_channels != expected:
        raise ValueError(
            f"the image has {in_channels} channel(s) but the bundle's network takes in_channels={expected}; "
            "pass --set in_channels=N as the checkpoint was trained."
        )
    network = parser.get_parsed_content("network_def")
    try:
        state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file: say which one
        raise ValueError(f"could not read checkpoint {checkpoint}: {error}") from error
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    try:
        network.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise ValueError(
            f"checkpoint {checkpoint} does not match the bundle's network_def (train it with this bundle, or pass "
            f"the same --set overrides it was trained with): {str(error).splitlines()[0]}"
        ) from error
    return network.eval()


def shf_figure(
    image: Path,
    label: Path,
    out: Path,
    bundle: Path | None = None,
    checkpoint: Path | None = None,
    binarize: bool = False,
    overrides: dict | None = None,
    width: int = 384,
) -> dict:
    """The paper's Figure 1 for one image/label pair, with the bundle's validation preprocessing.

    Row 1: input, ground truth, reconstructed mask (depatch of the label's class-fraction tokens: the
    upper bound of any prediction), the forest over the input. Row 2: the image tokens and the mask
    tokens as strips (reading order), the predicted tokens and the depatched prediction (with a
    ``checkpoint``; without one, those panels say so). 3D: the middle slice along the last axis.

    Args:
        image, label: files the bundle's ``LoadImaged`` reads (label: class indices).
        out: the PNG to write.
        bundle: a bundle folder (default: the 2D bundle of this repository).
        checkpoint: weights of the bundle's ``network_def`` (``models/best.pt`` or a state dict).
        binarize: foreground = label > 0 (instance masks).
        overrides: bundle config overrides (e.g. the network size a checkpoint was trained with).
        width: panel width in pixels.

    Returns:
        ``{"figure", "leaves", "upper_bound_dice", "dice"}`` (``dice`` of the prediction, or None).
    """
    import torch
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    from monai_shf.transforms import Depatch, HierarchicalPatchd
    from monai_shf.visualize import forest_overlay, label_rgb, panels, save_png, to_rgb, token_strip

    bundle = BUNDLE_2D if bundle is None else Path(bundle)
    config = bundle / "configs" / "train.yaml"
    for path, what in ((image, "image"), (label, "label"), (config, "bundle config")):
        if not Path(path).is_file():
            raise ValueError(f"{what} file not found: {path}")
    parser = ConfigParser()
    parser.read_config(str(config))
    for key, value in (overrides or {}).items():
        parser[key] = value
    steps = parser.get_parsed_content("validate#preprocessing").transforms
    at = next((i for i, t in enumerate(steps) if isinstance(t, HierarchicalPatchd)), None)
    if at is None:
        raise ValueError(f"{config}: validate#preprocessing has no HierarchicalPatchd.")
    patcher = steps[at]
    data = Compose([t for t in steps[:at]])({"image": str(image), "label": str(label)})
    truth = torch.as_tensor(data["label"]).as_subclass(torch.Tensor)
    truth = (truth > 0) if binarize else truth.round()
    num_classes = int(parser["num_classes"])
    if truth.min() < 0 or truth.max() >= num_classes:
        raise ValueError(
            f"label {label} has values in [{int(truth.min())}, {int(truth.max())}] but the bundle has "
            f"num_classes={num_classes}; pass --binarize for a mask or instance labels."
        )
    data["label"] = truth.to(torch.uint8)
    forest = patcher.forest(data)
    # the bundle's steps after the patcher too (e.g. the 2D bundle scales the image tokens after patching)
    patched = Compose(steps[at + 1 :])(patcher.patch(data, forest))
    depatcher = Depatch("linear")
    fractions = torch.as_tensor(patched["label"]).as_subclass(torch.Tensor)
    recon = depatcher(fractions, forest=forest).argmax(0)
    truth = truth[0].long()
    upper = foreground_dice(recon, truth, num_classes)
    mask = patched["token_mask"]
    img_tokens = torch.as_tensor(patched["image"]).as_subclass(torch.Tensor)
    mask_tokens = fractions.argmax(0, keepdim=True)
    image_arr = np.asarray(data["image"])
    if forest.spatial_dims == 2:  # MONAI's 2D readers index (x, y): show arrays and tokens as the file looks
        from monai_shf.forest import Forest

        shown_image = image_arr.swapaxes(1, 2)
        shown_forest = Forest(forest.starts[:, ::-1], forest.sizes[:, ::-1], forest.spatial_shape[::-1], forest.length)

        def show(a):
            return a.swapaxes(-1, -2)
    else:
        shown_image, shown_forest = image_arr, forest

        def show(a):
            return a

    row1 = [
        to_rgb(shown_image),
        label_rgb(show(truth.numpy())),
        label_rgb(show(recon.numpy())),
        forest_overlay(shown_image, shown_forest),
    ]
    titles1 = [
        "input",
        "ground truth",
        f"reconstructed, Dice {upper:.3f}",
        f"forest: {forest.num_leaves} leaves",
    ]
    row2 = [token_strip(show(img_tokens), mask), token_strip(show(mask_tokens), mask, labels=True)]
    titles2 = ["image tokens", "mask tokens"]
    dice = None
    if checkpoint is not None:
        network = _figure_network(parser, Path(checkpoint), img_tokens.shape[0])
        with torch.no_grad():
            logits = network(
                img_tokens[None].float(),
                torch.as_tensor(patched["geom"])[None].float(),
                torch.as_tensor(mask)[None].bool(),
            )
        probs = torch.softmax(logits, dim=1)[0]
        prediction = depatcher(probs, forest=forest).argmax(0)
        dice = foreground_dice(prediction, truth, num_classes)
        row2 += [
            token_strip(show(probs.argmax(0, keepdim=True)), mask, labels=True),
            label_rgb(show(prediction.numpy())),
        ]
        titles2 += ["predicted tokens", f"prediction: Dice {dice:.3f}"]
    else:
        note = np.full((256, 256, 3), 255, np.uint8)
        cv_text = "no checkpoint: pass --checkpoint"
        import cv2 as cv

        cv.putText(note, cv_text, (8, 128), cv.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv.LINE_AA)
        row2 += [note, note]
        titles2 += ["predicted tokens", "prediction (depatched)"]
    top, bottom = panels(row1, titles1, width=width), panels(row2, titles2, width=width)
    bottom = np.pad(bottom, ((0, 0), (0, top.shape[1] - bottom.shape[1]), (0, 0)), constant_values=255)
    figure = np.concatenate([top, np.full((8, top.shape[1], 3), 255, np.uint8), bottom], axis=0)
    path = save_png(out, figure)
    return {"figure": str(path), "leaves": forest.num_leaves, "upper_bound_dice": upper, "dice": dice}


def _override(text: str) -> tuple[str, object]:
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set expects KEY=VALUE (e.g. network_def#hidden_size=128), got {text!r}")
    key, value = text.split("=", 1)
    return key, yaml.safe_load(value)


def _segment_slide_command(args: argparse.Namespace) -> int:
    from monai_shf.inference import SEGMENT_STAGES, segment_slide

    try:
        r = segment_slide(
            args.slide,
            args.out,
            bundle=args.bundle,
            checkpoint=args.checkpoint,
            length=args.length,
            patch_size=args.patch_size,
            max_side=args.max_side,
            probabilities=args.probabilities,
            device=args.device,
            untrained=args.untrained,
            progress=not args.no_progress,
        )
    except (ValueError, TypeError) as error:  # bad input: one clear line, no traceback
        print(f"monai-shf segment-slide: error: {error}", file=sys.stderr)
        return 2
    h, w = r["shape"]
    weights = r["checkpoint"] or "none (--untrained: random weights)"
    print(f"slide   {args.slide}  ({h} x {w})")
    print(f"network {r['bundle'] or 'built-in defaults'}; weights {weights}")
    print(f"leaves  {r['leaves']} of L={r['length']} tokens, p={r['patch_size']}, {r['num_classes']} classes")
    stages = ", ".join(f"{name} {r['seconds'][name]:.2f} s" for name in SEGMENT_STAGES)
    print(f"time    {r['total_seconds']:.2f} s ({stages})")
    print(f"memory  peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB")
    print(f"mask    {r['out']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="monai-shf", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser(
        "demo", help="train, evaluate and run the 2D bundle on its embedded data (a few minutes on CPU)"
    )
    train.add_argument("--output-dir", type=Path, default=Path("outputs/demo"))
    train.add_argument("--max-epochs", type=int, default=30)
    train.add_argument("--num-train", type=int, default=8)
    train.add_argument("--image-size", type=int, default=1024)
    demo = sub.add_parser("patch-demo", help="patch a real image and report depatching fidelity")
    demo.add_argument("--output-dir", type=Path, default=Path("outputs/patch_demo"))
    demo.add_argument("--length", type=int, default=1024)
    demo.add_argument("--patch-size", type=int, default=8)
    demo.add_argument("--kernel-size", type=int, default=3)
    demo.add_argument("--thresholds", type=float, nargs=2, default=(50.0, 100.0))
    demo.add_argument("--edge-kind", choices=("soft", "canny"), default="soft", help="canny: the paper's edges")
    demo.add_argument("--criterion", choices=("error", "edges"), default="error", help="edges: the paper's order")
    datalist = sub.add_parser("datalist", help="write a MONAI datalist JSON for a folder layout")
    datalist.add_argument("root", type=Path)
    datalist.add_argument(
        "--layout",
        choices=("msd", "paired"),
        default="msd",
        help="msd: imagesTr/labelsTr (BTCV, KiTS); paired: image + mask files (PAIP)",
    )
    datalist.add_argument("--output", type=Path, default=None, help="default: <root>/datalist.json")
    datalist.add_argument("--val-fraction", type=float, default=0.2)
    datalist.add_argument("--label-suffix", default="_mask")
    datalist.add_argument("--image-suffix", default="")
    make_slide = sub.add_parser("make-slide", help="write a generated pyramidal test slide and its label slide")
    make_slide.add_argument("out", type=Path, help="the slide .tif (JPEG tiles)")
    make_slide.add_argument("--size", type=int, nargs="+", required=True, help="level-0 side N, or H W")
    make_slide.add_argument("--label-out", type=Path, default=None, help="default: <out stem>_label.tif")
    make_slide.add_argument("--no-label", action="store_true", help="write the slide only")
    make_slide.add_argument("--tile", type=int, default=512)
    make_slide.add_argument("--seed", type=int, default=0)
    make_slide.add_argument("--mpp", type=float, default=0.25, help="microns per pixel at level 0")
    figure = sub.add_parser(
        "figure", help="the paper's Figure 1 (forest, tokens, reconstruction, prediction) for an image"
    )
    figure.add_argument("image", type=Path)
    figure.add_argument("label", type=Path)
    figure.add_argument("--checkpoint", type=Path, default=None, help="bundle weights (e.g. models/best.pt)")
    figure.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: the 2D bundle)")
    figure.add_argument("--binarize", action="store_true", help="foreground = label > 0 (instance masks)")
    figure.add_argument("--set", dest="overrides", type=_override, action="append", default=[], metavar="KEY=VALUE")
    figure.add_argument("--out", type=Path, required=True, help="the PNG to write")
    segment = sub.add_parser(
        "segment-slide", help="segment a whole slide into a pyramidal mask (a bundle's SHF ViT, tile by tile)"
    )
    segment.add_argument("slide", type=Path, help="the slide (SVS, tiled TIFF, OME-TIFF, ...)")
    segment.add_argument("--out", type=Path, required=True, help="the mask .tif (its folder must exist)")
    segment.add_argument("--bundle", type=Path, default=None, help="default: bundles/shf_wsi_segmentation")
    segment.add_argument("--checkpoint", type=Path, default=None, help="default: <bundle>/models/best.pt|latest.pt")
    segment.add_argument("--length", type=int, default=None, help="tokens L (default: the bundle's)")
    segment.add_argument("--patch-size", type=int, default=None, help="token side p (default: the bundle's)")
    segment.add_argument("--max-side", type=int, default=None, help="longest side of the forest level")
    segment.add_argument("--probabilities", action="store_true", help="write uint8 softmax probabilities")
    segment.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    segment.add_argument("--untrained", action="store_true", help="random weights (timing and smoke tests)")
    segment.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.command == "segment-slide":
        return _segment_slide_command(args)
    if args.command == "make-slide":
        return _make_slide_command(args)
    if args.command == "figure":
        r = shf_figure(
            args.image, args.label, args.out, args.bundle, args.checkpoint, args.binarize, dict(args.overrides)
        )
        print(f"figure      {r['figure']}  ({r['leaves']} leaves)")
        print(f"upper bound Dice (depatched label tokens): {r['upper_bound_dice']:.4f}")
        if r["dice"] is not None:
            print(f"prediction Dice (depatched): {r['dice']:.4f}")
    elif args.command == "datalist":
        from monai_shf.data import make_datalist

        out = args.output or args.root / "datalist.json"
        made = make_datalist(args.root, args.layout, out, args.val_fraction, args.image_suffix, args.label_suffix)
        print(f"{out}: {len(made['training'])} training, {len(made['validation'])} validation cases")
    elif args.command == "demo":
        r = training_demo(args.output_dir, args.max_epochs, args.num_train, args.image_size)
        m = r["metrics"]
        print(
            f"trained the 2D bundle for {args.max_epochs} epochs on {args.num_train} generated {args.image_size}x{args.image_size} images in {r['train_seconds']:.0f} s"
        )
        print(
            f"full-resolution Dice after depatching (validation): {m['val_mean_dice']:.4f}   token-space Dice: {m['val_token_dice']:.4f}"
        )
        print(f"figure      {r['figure']}")
        print(f"prediction  {r['pred_path']}")
    elif args.command == "patch-demo":
        r = patching_demo(
            args.output_dir,
            args.length,
            args.patch_size,
            args.kernel_size,
            tuple(args.thresholds),
            args.edge_kind,
            args.criterion,
        )
        print(f"data        {r['source']}")
        print(
            f"tokens      {r['token_shape']}  (L={r['length']}, {r['leaves']} leaves, {r['padding']} padding, leaf sides {r['leaf_sides']} px)"
        )
        print(f"compression {r['compression']:.2f} image pixels per token pixel")
        print(
            f"timing      edges {r['ms_edges']:.1f} ms, build {r['ms_build']:.1f} ms, serialize {r['ms_serialize']:.1f} ms, deserialize {r['ms_deserialize']:.1f} ms"
        )
        print(
            f"depatch Dice of a perfect prediction: {r['dice_soft_linear']:.4f} (soft tokens, linear), {r['dice_hard_nearest']:.4f} (hard tokens, nearest)"
        )
        print(f"figure      {r['figure']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
