"""The paper's Figure 1 for any image (``monai-shf figure``): input, ground truth, the reconstructed
mask (upper bound), the forest, token strips, and with a checkpoint the predicted tokens and the
depatched prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from monai_shf.bundles import apply_overrides, bundle_path
from monai_shf.utils import foreground_dice

__all__ = ["shf_figure"]


def _figure_network(parser, checkpoint: Path, in_channels: int):
    """The bundle's ``network_def`` with the weights of ``checkpoint`` (:func:`~monai_shf.networks.load_checkpoint`)."""
    from monai_shf.networks import load_checkpoint

    expected = int(parser["in_channels"])
    if in_channels != expected:
        raise ValueError(
            f"the image has {in_channels} channel(s) but the bundle's network takes in_channels={expected}; "
            "pass --set in_channels=N as the checkpoint was trained."
        )
    return load_checkpoint(parser.get_parsed_content("network_def"), checkpoint).eval()


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

    bundle = bundle_path("shf_2d_segmentation") if bundle is None else Path(bundle)
    config = bundle / "configs" / "train.yaml"
    for path, what in ((image, "image"), (label, "label"), (config, "bundle config")):
        if not Path(path).is_file():
            raise ValueError(f"{what} file not found: {path}")
    parser = ConfigParser()
    parser.read_config(str(config))
    apply_overrides(parser, overrides, config)
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
