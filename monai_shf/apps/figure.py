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

    from monai_shf.transforms import Depatch
    from monai_shf.visualize import panels, save_png

    parser, patched, forest, truth = _patched_sample(image, label, bundle, overrides, binarize)
    num_classes = int(parser["num_classes"])
    depatcher = Depatch("linear")
    fractions = torch.as_tensor(patched["label"]).as_subclass(torch.Tensor)
    recon = depatcher(fractions, forest=forest).argmax(0)
    upper = foreground_dice(recon, truth, num_classes)
    img_tokens = torch.as_tensor(patched["image"]).as_subclass(torch.Tensor)
    view = _View(np.asarray(patched["source_image"]), forest)
    row1, titles1, row2, titles2 = _truth_panels(
        view, truth, recon, upper, img_tokens, fractions, patched["token_mask"]
    )
    dice = None
    if checkpoint is not None:
        network = _figure_network(parser, Path(checkpoint), img_tokens.shape[0])
        with torch.no_grad():
            logits = network(
                img_tokens[None].float(),
                torch.as_tensor(patched["geom"])[None].float(),
                torch.as_tensor(patched["token_mask"])[None].bool(),
            )
        probs = torch.softmax(logits, dim=1)[0]
        prediction = depatcher(probs, forest=forest).argmax(0)
        dice = foreground_dice(prediction, truth, num_classes)
        row2 += view.prediction_panels(probs, prediction, patched["token_mask"])
        titles2 += ["predicted tokens", f"prediction: Dice {dice:.3f}"]
    else:
        row2 += [_note("no checkpoint: pass --checkpoint")] * 2
        titles2 += ["predicted tokens", "prediction (depatched)"]
    top, bottom = panels(row1, titles1, width=width), panels(row2, titles2, width=width)
    bottom = np.pad(bottom, ((0, 0), (0, top.shape[1] - bottom.shape[1]), (0, 0)), constant_values=255)
    figure = np.concatenate([top, np.full((8, top.shape[1], 3), 255, np.uint8), bottom], axis=0)
    path = save_png(out, figure)
    return {"figure": str(path), "leaves": forest.num_leaves, "upper_bound_dice": upper, "dice": dice}


def _patched_sample(image: Path, label: Path, bundle: Path | None, overrides: dict | None, binarize: bool):
    """``(parser, patched sample, forest, truth)`` of one pair through the bundle's validation preprocessing
    (``patched["source_image"]`` is the image before patching; ``truth`` the ``(*spatial)`` int64 labels)."""
    import torch
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    from monai_shf.transforms import HierarchicalPatchd

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
    data = Compose(list(steps[:at]))({"image": str(image), "label": str(label)})
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
    patched = Compose(list(steps[at + 1 :]))(patcher.patch(data, forest))
    patched["source_image"] = data["image"]
    return parser, patched, forest, truth[0].long()


class _View:
    """How panels are shown: MONAI's 2D readers index ``(x, y)``, so 2D arrays, tokens and the forest are
    transposed to look as the file does; 3D shows the middle slice (the drawing helpers' default)."""

    def __init__(self, image: np.ndarray, forest) -> None:
        from monai_shf.forest import Forest

        self.transpose = forest.spatial_dims == 2
        if self.transpose:
            self.image = image.swapaxes(1, 2)
            self.forest = Forest(
                forest.starts[:, ::-1], forest.sizes[:, ::-1], forest.spatial_shape[::-1], forest.length
            )
        else:
            self.image, self.forest = image, forest

    def __call__(self, a):
        return a.swapaxes(-1, -2) if self.transpose else a

    def prediction_panels(self, probs, prediction, mask) -> list[np.ndarray]:
        from monai_shf.visualize import label_rgb, token_strip

        return [
            token_strip(self(probs.argmax(0, keepdim=True)), mask, labels=True),
            label_rgb(self(prediction.numpy())),
        ]


def _truth_panels(view: _View, truth, recon, upper: float, img_tokens, fractions, mask):
    """Row 1 (input, truth, reconstruction, forest) and the token strips of row 2, with their titles."""
    from monai_shf.visualize import forest_overlay, label_rgb, to_rgb, token_strip

    row1 = [
        to_rgb(view.image),
        label_rgb(view(truth.numpy())),
        label_rgb(view(recon.numpy())),
        forest_overlay(view.image, view.forest),
    ]
    titles1 = ["input", "ground truth", f"reconstructed, Dice {upper:.3f}", f"forest: {view.forest.num_leaves} leaves"]
    mask_tokens = fractions.argmax(0, keepdim=True)
    row2 = [token_strip(view(img_tokens), mask), token_strip(view(mask_tokens), mask, labels=True)]
    return row1, titles1, row2, ["image tokens", "mask tokens"]


def _note(text: str) -> np.ndarray:
    """A blank 256² panel saying ``text``."""
    import cv2 as cv

    note = np.full((256, 256, 3), 255, np.uint8)
    cv.putText(note, text, (8, 128), cv.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv.LINE_AA)
    return note
