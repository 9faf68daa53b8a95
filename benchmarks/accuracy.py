"""Equal-compute accuracy: SHF vs the same ViT without SHF vs MONAI's UNet and UNETR, on held-out data.

Every method trains under the SAME compute budget, measured as the PROCESS CPU TIME of its training
loop (``time.process_time()``: data augmentation, patching, forward, loss, backward, optimizer step;
all threads of the process) with torch's thread count fixed (``--threads``, default 1). Equal compute
= equal CPU seconds: unlike wall-clock, it does not change when other processes share the machine.
Wall-clock is reported too. Held-out Dice is evaluated periodically (not counted in the budget) to
draw learning curves (held-out Dice vs training CPU seconds).

Methods (one network each; optimizer, learning rate, batch size and augmentations are the same for
all, taken from the SHF bundle of the data's dimensionality):

- ``shf``: ``SHFViT`` on ``L`` SHF tokens: the bundle's random transforms (flips, rot90 in 2D,
  ``RandHierarchicalPatchd`` with random edge parameters), its loss (``TokenDiceCELoss`` on class
  fractions) and its evaluation (deterministic ``HierarchicalPatchd``, prediction depatched to full
  resolution, Dice against the full-resolution label).
- ``grid_l``: the same network and pipeline on ``L`` uniform tokens (a forest from a constant score is
  a uniform quadtree/octree): the "same model without SHF".
- ``grid_full``: the same network on uniform ``p^D`` patches of the full image (every leaf is ``p``
  pixels: no resampling, many more tokens, fewer steps in the budget).
- ``unet`` / ``unetr``: ``monai.networks.nets.UNet`` / ``UNETR`` with MONAI's usual recipe: random crops
  (``RandSpatialCropd``) after the same flips/rot90, ``DiceCELoss(to_onehot_y, softmax)``, and
  ``sliding_window_inference`` on the held-out image.

Held-out Dice: mean over the foreground classes (MONAI's ``MeanDice(include_background=False)``), at
the label's own resolution. ``upper bound``: the Dice of the depatched label tokens (a perfect token
prediction); 1 for methods that see the image at full resolution.

Datasets: ``nuclei2d`` (left half trains, right half validates; foreground = mask > 0), ``mni152``
(3-class tissue label from GM/WM > 127 on the T1; downsampled, see ``--mni-downsample``; split along
z, see docs/decisions.md: the template is exactly left-right symmetric, so a hemisphere split would
validate on the mirror image of the training data), and any ``--image/--label`` pair (split in halves
along ``--split-axis``). Each half is zero-padded to a common shape, a multiple of 16.

Run: ``python benchmarks/accuracy.py --budget 120`` (both real datasets, all methods), or
``python benchmarks/accuracy.py --quick`` (a few minutes on 2 cores). Writes ``<dataset>.md`` (table),
``<dataset>.png`` (learning curves) and ``results.json`` under ``--output-dir``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, ROOT, memory_status, mni152_tissue, nuclei2d, reset_peak_memory, table  # noqa: E402

from monai_shf.forest import Forest  # noqa: E402
from monai_shf.utils import foreground_dice  # noqa: E402

__all__ = ["METHODS", "Case", "RunConfig", "load_case", "run_method", "main"]

METHODS = ("shf", "grid_l", "grid_full", "unet", "unetr")
MB = 1 << 20
PAD_MULTIPLE = 16  # UNet (4 stride-2 levels) and UNETR (16-pixel patches) need sides divisible by 16


@dataclass
class Case:
    """One dataset split: train/validation halves ``(C, *S)`` float32 in [0, 1] and ``(1, *S)`` uint8."""

    name: str
    train_image: np.ndarray
    train_label: np.ndarray
    val_image: np.ndarray
    val_label: np.ndarray
    num_classes: int
    notes: str = ""

    @property
    def spatial_dims(self) -> int:
        return self.train_image.ndim - 1


@dataclass
class RunConfig:
    """Settings shared by every method of a run."""

    budget: float = 120.0
    evals: int = 6
    threads: int = 1
    seed: int = 0
    quick: bool = False
    learning_rate: float | None = None  # None: the bundle's
    batch_size: int | None = None  # None: the bundle's
    patch_size: int | None = None  # None: the bundle's
    length: int | None = None  # None: the full-resolution grid's token count / 4
    crop: int | None = None  # side of the baselines' training crops / sliding window; None: 128 (2D), 64 (3D)
    weights_dir: str | None = None  # save each method's final state dict here (e.g. for `monai-shf figure`)
    # the bundle network with PyTorch's fused attention (same maths; memory linear in the token count)
    overrides: dict[str, Any] = field(default_factory=lambda: {"network_def#use_flash_attention": True})


# ----------------------------------------------------------------------------------------- data


def _pad_to(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-pad ``(C, *S)`` at the end of each spatial axis to ``shape``."""
    pad = [(0, 0)] + [(0, t - s) for s, t in zip(x.shape[1:], shape)]
    return np.pad(x, pad)


def _normalise(image: np.ndarray) -> np.ndarray:
    image = image.astype(np.float32)
    low, high = float(image.min()), float(image.max())
    return (image - low) / (high - low if high > low else 1.0)


def split_case(name: str, image: np.ndarray, label: np.ndarray, axis: int, num_classes: int, notes: str = "") -> Case:
    """Split ``(C, *S)`` / ``(1, *S)`` into first half (train) / second half (validation) along spatial
    ``axis``; both halves zero-padded to one shape (a multiple of 16)."""
    if image.shape[1:] != label.shape[1:]:
        raise ValueError(f"image {image.shape} and label {label.shape} must share the spatial shape.")
    if not 0 <= axis < image.ndim - 1:
        raise ValueError(f"split axis must be in [0, {image.ndim - 1}), got {axis}.")
    half = image.shape[1 + axis] // 2
    parts = []
    for arr in (image, label):
        first = np.take(arr, np.arange(half), axis=1 + axis)
        second = np.take(arr, np.arange(half, arr.shape[1 + axis]), axis=1 + axis)
        parts.append((first, second))
    shape = tuple(
        -(-max(a, b) // PAD_MULTIPLE) * PAD_MULTIPLE for a, b in zip(parts[0][0].shape[1:], parts[0][1].shape[1:])
    )
    (ti, vi), (tl, vl) = [(_pad_to(a, shape), _pad_to(b, shape)) for a, b in parts]
    return Case(name, ti, tl.astype(np.uint8), vi, vl.astype(np.uint8), num_classes, notes)


def _read(path: Path) -> np.ndarray:
    suffix = "".join(path.suffixes[-2:]).lower()
    if path.suffix.lower() == ".npy":
        return np.load(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    if suffix.endswith(".nii.gz") or path.suffix.lower() == ".nii":
        import nibabel as nib

        return np.asarray(nib.load(str(path)).dataobj)
    import cv2 as cv

    array = cv.imread(str(path), cv.IMREAD_UNCHANGED)
    if array is None:
        raise ValueError(f"could not read {path}: expected .npy, .tif, .nii(.gz) or an image file OpenCV reads.")
    return array[..., ::-1].copy() if array.ndim == 3 else array  # BGR -> RGB


def load_pair(
    image_path: Path, label_path: Path, spatial_dims: int, split_axis: int | None, binarize: bool, downsample: int = 1
) -> Case:
    """A user's image/label pair: ``(*S)`` or ``(*S, C)`` image, ``(*S)`` integer label."""
    image, label = _read(image_path), _read(label_path)
    if label.ndim != spatial_dims:
        raise ValueError(f"label {label_path} must be {spatial_dims}D (spatial only), got shape {label.shape}.")
    if image.ndim == spatial_dims:
        image = image[None]
    elif image.ndim == spatial_dims + 1:
        image = np.moveaxis(image, -1, 0)
    else:
        raise ValueError(
            f"image {image_path} must be {spatial_dims}D or {spatial_dims}D + channels, got {image.shape}."
        )
    if not np.issubdtype(label.dtype, np.integer) and not np.array_equal(label, np.round(label)):
        raise ValueError(f"label {label_path} must hold integer class indices, got dtype {label.dtype}.")
    label = (label > 0) if binarize else label.astype(np.int64)
    if label.min() < 0:
        raise ValueError(f"label {label_path} has negative values.")
    num_classes = int(label.max()) + 1
    if num_classes > 32:
        raise ValueError(f"label {label_path} has {num_classes} classes (instance labels?): pass --binarize.")
    step = (slice(None),) + (slice(None, None, downsample),) * spatial_dims
    image, label = _normalise(image)[step], label.astype(np.uint8)[None][step]
    axis = (1 if spatial_dims == 2 else 0) if split_axis is None else split_axis
    return split_case(image_path.name, image, label, axis, max(num_classes, 2), f"split along axis {axis}")


def load_nuclei2d() -> Case:
    image, mask = nuclei2d()
    image = _normalise(image)[None]
    label = (mask > 0).astype(np.uint8)[None]
    return split_case("nuclei2d", image, label, 1, 2, "512x512; left half trains, right half validates")


def load_mni152(downsample: int = 3, split_axis: int = 2) -> Case:
    t1, label = mni152_tissue()
    step = (slice(None), *(slice(None, None, downsample),) * 3)
    image = _normalise(t1)[step]
    label = label[None][step]
    notes = (
        f"T1 197x233x189 at 1 mm, every {downsample}th voxel ({downsample} mm); classes background/GM/WM; "
        f"first half along axis {split_axis} trains, second half validates"
    )
    return split_case("mni152", image, label, split_axis, 3, notes)


def load_case(name: str, args: argparse.Namespace) -> Case:
    if name == "nuclei2d":
        return load_nuclei2d()
    if name == "mni152":
        return load_mni152(args.mni_downsample, 2 if args.split_axis is None else args.split_axis)
    raise ValueError(f"unknown dataset {name!r}")


# ------------------------------------------------------------------------------------ methods


def bundle_config(spatial_dims: int, overrides: dict[str, Any]):
    """The SHF bundle's train config (``bundles/shf_{2,3}d_segmentation/configs/train.yaml``) with
    ``overrides`` applied, as a ``monai.bundle.ConfigParser``. The cases are plain arrays on their own
    isotropic grid (no affine for the 3D bundle's ``patch_spacing: meta`` to read): voxel-cube forests."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(
        str(ROOT / "monai_shf" / "bundles" / f"shf_{spatial_dims}d_segmentation" / "configs" / "train.yaml")
    )
    if "patch_spacing" in parser.get():
        overrides = {"patch_spacing": None, **overrides}
    for key, value in overrides.items():
        parser[key] = value
    return parser


def grid_forest(spatial_shape: tuple[int, ...], patch_size: int) -> Forest:
    """The uniform forest of ``p^D`` leaves in raster order (the plain ViT patching); sides divisible by ``p``."""
    if any(s % patch_size for s in spatial_shape):
        raise ValueError(f"spatial shape {tuple(spatial_shape)} must be divisible by patch_size {patch_size}.")
    axes = [np.arange(0, s, patch_size) for s in spatial_shape]
    starts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(spatial_shape))
    return Forest(starts, np.full_like(starts, patch_size), tuple(int(s) for s in spatial_shape), len(starts))


def _add_constant_score(data: dict) -> dict:
    """A constant score map (all False) of the image's spatial shape under ``"score"``."""
    return {**data, "score": torch.zeros((1, *data["image"].shape[1:]), dtype=torch.bool)}


class TokenMethod:
    """SHFViT on tokens: ``shf`` (the bundle's random SHF patching), ``grid_l`` / ``grid_full`` (uniform
    forests from a constant score, ``L`` or full-resolution tokens)."""

    def __init__(self, kind: str, case: Case, cfg: RunConfig) -> None:
        from monai.transforms import Compose

        from monai_shf.transforms import HierarchicalPatchd, RandHierarchicalPatchd

        d = case.spatial_dims
        probe = bundle_config(d, {})
        p = cfg.patch_size or int(probe["forest#patch_size"])
        grid_tokens = int(np.prod([s // p for s in case.train_image.shape[1:]]))
        length = grid_tokens if kind == "grid_full" else (cfg.length or max(1, grid_tokens // 4))
        overrides = {
            "forest#length": length,
            "forest#patch_size": p,
            "num_classes": case.num_classes,
            "in_channels": case.train_image.shape[0],
            **cfg.overrides,
        }
        parser = bundle_config(d, overrides)
        self.ignore_index = float(parser["ignore_index"])
        random_transforms = parser.get_parsed_content("train#random_transforms")
        at = next(i for i, t in enumerate(random_transforms) if isinstance(t, RandHierarchicalPatchd))
        self.augment = Compose(random_transforms[:at])
        val_patch = next(
            t
            for t in parser.get_parsed_content("validate#preprocessing").transforms
            if isinstance(t, HierarchicalPatchd)
        )
        if kind == "shf":
            self.train_patch, self.val_patch = random_transforms[at], val_patch
        else:
            grid = HierarchicalPatchd(
                ["image", "label"],
                length,
                p,
                mode=["area", "fraction"],
                num_classes=[None, case.num_classes],
                padding_value=[0, self.ignore_index],
                min_size=p if kind == "grid_full" else int(parser["forest#min_size"]),
                score_key="score",
            )
            if kind == "grid_l":
                # a constant score: no leaf has more edge pixels than another, the build splits by area alone
                self.train_patch = self.val_patch = Compose([_add_constant_score, grid])
            else:
                # every leaf exactly p pixels (raster order, as a ViT's patch embedding): no resampling
                self.train_patch = self.val_patch = lambda data: grid.patch(
                    data, grid_forest(data["image"].shape[1:], p)
                )
        self.network = parser.get_parsed_content("network_def")
        self.loss = parser.get_parsed_content("loss")
        self.length, self.patch_size, self.num_classes = length, p, case.num_classes
        self.describe = f"{length} tokens of {p}^{d}"
        self.pixels_per_sample = length * p**d
        self._val = self._prepare_val(case)

    def _patch(self, transform, image: np.ndarray, label: np.ndarray) -> dict:
        data = transform({"image": torch.from_numpy(image), "label": torch.from_numpy(label)})
        if "score" in data:
            del data["score"]
        return data

    def _prepare_val(self, case: Case) -> dict:
        from monai_shf.transforms import Depatch
        from monai_shf.transforms.functional import forest_from_trace

        data = self._patch(self.val_patch, case.val_image, case.val_label)
        forest, _ = forest_from_trace(data["label"])
        bound = Depatch("linear")(torch.as_tensor(data["label"]).as_subclass(torch.Tensor), forest=forest)
        upper = foreground_dice(np.asarray(bound.argmax(0)), case.val_label[0], case.num_classes)
        return {
            "x": torch.as_tensor(data["image"]).as_subclass(torch.Tensor)[None].float(),
            "geom": torch.as_tensor(data["geom"])[None].float(),
            "mask": torch.as_tensor(data["token_mask"])[None],
            "forest": forest,
            "truth": case.val_label[0],
            "upper": upper,
        }

    def batch(self, case: Case, size: int) -> tuple:
        samples = [
            self._patch(self.train_patch, *self._augmented(case))  # augment, then patch (the bundle's order)
            for _ in range(size)
        ]

        def stack(key: str, dtype: torch.dtype) -> torch.Tensor:
            return torch.stack([torch.as_tensor(s[key]).as_subclass(torch.Tensor) for s in samples]).to(dtype)

        return (
            stack("image", torch.float32),
            stack("label", torch.float32),
            stack("geom", torch.float32),
            stack("token_mask", torch.bool),
        )

    def _augmented(self, case: Case) -> tuple[np.ndarray, np.ndarray]:
        data = self.augment({"image": torch.from_numpy(case.train_image), "label": torch.from_numpy(case.train_label)})
        return np.asarray(data["image"]), np.asarray(data["label"])

    def loss_of(self, batch: tuple) -> torch.Tensor:
        x, y, geom, mask = batch
        return self.loss(self.network(x, geom, mask), y, token_mask=mask)

    @torch.no_grad()
    def evaluate(self) -> float:
        from monai_shf.transforms import Depatch

        v = self._val
        probs = torch.softmax(self.network(v["x"], v["geom"], v["mask"]), dim=1)[0]
        full = Depatch("linear")(probs, forest=v["forest"])
        return foreground_dice(np.asarray(full.argmax(0)), v["truth"], self.num_classes)


class ImageMethod:
    """MONAI's UNet / UNETR on the image itself: random crops to train, sliding window to evaluate."""

    def __init__(self, kind: str, case: Case, cfg: RunConfig) -> None:
        from monai.losses import DiceCELoss
        from monai.networks.nets import UNETR, UNet
        from monai.transforms import Compose, RandSpatialCropd

        from monai_shf.transforms import RandHierarchicalPatchd

        d = case.spatial_dims
        parser = bundle_config(d, {"num_classes": case.num_classes, "in_channels": case.train_image.shape[0]})
        random_transforms = parser.get_parsed_content("train#random_transforms")
        at = next(i for i, t in enumerate(random_transforms) if isinstance(t, RandHierarchicalPatchd))
        side = cfg.crop or (128 if d == 2 else 64)
        # the crop must fit in every augmented orientation (rot90 swaps the first two axes)
        smallest = min(case.train_image.shape[1:3]) if d == 2 else None
        roi = tuple(
            max(PAD_MULTIPLE, min(side, (smallest if smallest is not None else s) // PAD_MULTIPLE * PAD_MULTIPLE))
            for s in case.train_image.shape[1:]
        )
        self.augment = Compose([*random_transforms[:at], RandSpatialCropd(["image", "label"], roi, random_size=False)])
        c, k = case.train_image.shape[0], case.num_classes
        if kind == "unet":
            # MONAI's tutorial UNet (spleen/BTCV recipes)
            self.network = UNet(d, c, k, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2)
        else:
            # MONAI's UNETR defaults (ViT-B/16 encoder, feature_size 16, instance norm)
            self.network = UNETR(c, k, img_size=roi, feature_size=16, spatial_dims=d, norm_name="instance")
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)
        self.roi, self.num_classes = roi, k
        self.describe = f"crop {'x'.join(map(str, roi))}"
        self.pixels_per_sample = int(np.prod(roi))
        self._val = (torch.from_numpy(case.val_image)[None], case.val_label[0])
        self.upper = 1.0

    def batch(self, case: Case, size: int) -> tuple:
        samples = [
            self.augment({"image": torch.from_numpy(case.train_image), "label": torch.from_numpy(case.train_label)})
            for _ in range(size)
        ]
        x = torch.stack([torch.as_tensor(s["image"]).as_subclass(torch.Tensor) for s in samples]).float()
        y = torch.stack([torch.as_tensor(s["label"]).as_subclass(torch.Tensor) for s in samples]).float()
        return x, y

    def loss_of(self, batch: tuple) -> torch.Tensor:
        x, y = batch
        return self.loss(self.network(x), y)

    @torch.no_grad()
    def evaluate(self) -> float:
        from monai.inferers import sliding_window_inference

        image, truth = self._val
        logits = sliding_window_inference(image, self.roi, 4, self.network, overlap=0.25)
        return foreground_dice(np.asarray(logits[0].argmax(0)), truth, self.num_classes)


def run_method(case: Case, method: str, cfg: RunConfig) -> dict:
    """Train ``method`` on ``case`` for ``cfg.budget`` CPU seconds; evaluate ``cfg.evals`` times."""
    import cv2 as cv
    from monai.data import set_track_meta
    from monai.utils import set_determinism

    torch.set_num_threads(cfg.threads)
    cv.setNumThreads(cfg.threads)
    set_determinism(cfg.seed)
    set_track_meta(True)  # the patch record (forest) rides on the tokens' trace
    baseline = memory_status("VmRSS")
    model = (
        TokenMethod(method, case, cfg) if method in ("shf", "grid_l", "grid_full") else ImageMethod(method, case, cfg)
    )
    net = model.network
    parser = bundle_config(case.spatial_dims, {})
    lr = cfg.learning_rate or float(parser["learning_rate"])
    batch_size = cfg.batch_size or int(parser["batch_size"])
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=float(parser["optimizer"]["weight_decay"]))
    interval = cfg.budget / max(1, cfg.evals)
    cpu = wall = 0.0
    steps, next_eval, curve, peak = 0, interval, [], 0
    can_reset = reset_peak_memory()
    net.train()
    while cpu < cfg.budget:
        c0, w0 = time.process_time(), time.perf_counter()
        batch = model.batch(case, batch_size)
        optimizer.zero_grad(set_to_none=True)
        loss = model.loss_of(batch)
        loss.backward()
        optimizer.step()
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        steps += 1
        if cpu >= next_eval or cpu >= cfg.budget:
            peak = max(peak, memory_status("VmHWM"))  # training peak so far, before evaluation allocates
            net.eval()
            e0 = time.perf_counter()
            dice = model.evaluate()
            eval_seconds = time.perf_counter() - e0
            net.train()
            curve.append({"cpu_s": cpu, "wall_s": wall, "steps": steps, "dice": dice, "loss": float(loss.detach())})
            print(
                f"  {case.name} {method}: {steps} steps, {cpu:.0f} CPU s, Dice {dice:.4f}", file=sys.stderr, flush=True
            )
            while next_eval <= cpu:
                next_eval += interval
            if can_reset:
                reset_peak_memory()
    upper = model._val["upper"] if isinstance(model, TokenMethod) else model.upper
    if cfg.weights_dir is not None:
        from monai_shf.utils import atomic_write

        Path(cfg.weights_dir).mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        atomic_write(Path(cfg.weights_dir) / f"{case.name}_{method}.pt", lambda tmp: torch.save(state, tmp))
    return {
        "method": method,
        "input": model.describe,
        "pixels_per_sample": model.pixels_per_sample,
        "parameters": sum(p.numel() for p in net.parameters()),
        "steps": steps,
        "batch_size": batch_size,
        "learning_rate": lr,
        "cpu_s": cpu,
        "wall_s": wall,
        "peak_mb": (peak - baseline) / MB if can_reset else None,
        "dice": curve[-1]["dice"],
        "upper_bound": upper,
        "eval_s": eval_seconds,
        "curve": curve,
    }


# ------------------------------------------------------------------------------------- report

LABELS = {
    "shf": "SHF (L SHF tokens)",
    "grid_l": "grid, same L",
    "grid_full": "grid, full resolution",
    "unet": "MONAI UNet",
    "unetr": "MONAI UNETR",
}


def report_rows(results: list[dict]) -> list[dict]:
    rows = []
    for r in results:
        rows.append(
            {
                "method": LABELS.get(r["method"], r["method"]),
                "input per sample": r["input"],
                "px/sample": f"{r['pixels_per_sample']}",
                "params": f"{r['parameters'] / 1e6:.1f}M",
                "steps": f"{r['steps']}",
                "train CPU s": f"{r['cpu_s']:.0f}",
                "train wall s": f"{r['wall_s']:.0f}",
                "CPU ms/step": f"{1e3 * r['cpu_s'] / max(r['steps'], 1):.0f}",
                "peak MB": "" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}",
                "held-out Dice": f"{r['dice']:.4f}",
                "upper bound": f"{r['upper_bound']:.4f}",
                "eval s": f"{r['eval_s']:.1f}",
            }
        )
    return rows


COLUMNS = [
    "method",
    "input per sample",
    "px/sample",
    "params",
    "steps",
    "train CPU s",
    "train wall s",
    "CPU ms/step",
    "peak MB",
    "held-out Dice",
    "upper bound",
    "eval s",
]


def write_report(case: Case, results: list[dict], cfg: RunConfig, output_dir: Path) -> tuple[Path, Path]:
    from monai_shf.visualize import line_chart, save_png

    output_dir.mkdir(parents=True, exist_ok=True)
    text = table(report_rows(results), COLUMNS)
    shape = "x".join(map(str, case.train_image.shape[1:]))
    header = (
        f"### {case.name}: train {shape} / validation {'x'.join(map(str, case.val_image.shape[1:]))} "
        f"(C={case.train_image.shape[0]}, K={case.num_classes}); budget {cfg.budget:g} CPU s per method, "
        f"{cfg.threads} torch thread(s)\n\n{case.notes}\n\n"
    )
    md = output_dir / f"{case.name}.md"
    md.write_text(header + text + "\n")
    series = {
        LABELS.get(r["method"], r["method"]): (
            [0.0] + [c["cpu_s"] for c in r["curve"]],
            [np.nan] + [c["dice"] for c in r["curve"]],
        )
        for r in results
    }
    chart = line_chart(
        series,
        title=f"{case.name}: held-out Dice vs training compute (budget {cfg.budget:g} CPU s)",
        x_label="training CPU seconds",
        y_label="held-out Dice",
        y_range=(0.0, 1.0),
    )
    png = save_png(output_dir / f"{case.name}.png", chart)
    print(header + text, flush=True)
    return md, png


def _run_all(cases: list[Case], methods: list[str], cfg: RunConfig, jobs: int) -> dict[str, list[dict]]:
    tasks = [(case, m) for case in cases for m in methods]
    results: dict[str, list[dict]] = {case.name: [] for case in cases}
    if jobs == 0:  # in this process (tests; peak memory then includes what ran before)
        for case, m in tasks:
            results[case.name].append(run_method(case, m, cfg))
            print(f"done {case.name} {m}", file=sys.stderr, flush=True)
        return results
    # one fresh process per method: a clean heap (peak memory is its own), no state shared
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        futures = [(case.name, m, pool.submit(run_method, case, m, cfg)) for case, m in tasks]
        for name, m, future in futures:
            results[name].append(future.result())
            print(f"done {name} {m}", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["nuclei2d", "mni152"], choices=["nuclei2d", "mni152"])
    parser.add_argument("--image", type=Path, help="your own image (.npy, .tif, .nii.gz, .png): replaces --datasets")
    parser.add_argument("--label", type=Path, help="its label (integer classes, same spatial shape)")
    parser.add_argument("--spatial-dims", type=int, default=2, choices=[2, 3])
    parser.add_argument("--binarize", action="store_true", help="foreground = label > 0 (e.g. instance masks)")
    parser.add_argument("--split-axis", type=int, default=None, help="spatial axis of the train/validation halves")
    parser.add_argument("--downsample", type=int, default=1, help="keep every n-th pixel of --image/--label")
    parser.add_argument("--mni-downsample", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--budget", type=float, default=120.0, help="training CPU seconds per method")
    parser.add_argument("--evals", type=int, default=6, help="held-out evaluations per method (learning curve)")
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenCV threads per method")
    parser.add_argument("--jobs", type=int, default=2, help="methods run at once, one process each (0: in-process)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate for all methods (default: bundle's)")
    parser.add_argument("--length", type=int, default=None, help="SHF / grid_l tokens (default: grid tokens / 4)")
    parser.add_argument("--patch-size", type=int, default=None, help="token side p (default: the bundle's)")
    parser.add_argument("--quick", action="store_true", help="small ViT, 20 CPU s per method, 3 evaluations")
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/accuracy"))
    parser.add_argument(
        "--save-weights",
        action="store_true",
        help="save each method's final state dict as <output-dir>/weights/<dataset>_<method>.pt",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if (args.image is None) != (args.label is None):
        parser.error("--image and --label go together")
    for name in ("budget", "evals", "threads", "downsample", "mni_downsample"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    for name in ("length", "patch_size"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    cfg = RunConfig(
        budget=args.budget,
        evals=args.evals,
        threads=args.threads,
        seed=args.seed,
        learning_rate=args.lr,
        length=args.length,
        patch_size=args.patch_size,
        weights_dir=str(args.output_dir / "weights") if args.save_weights else None,
    )
    if args.quick:
        cfg.budget = min(cfg.budget, 20.0)
        cfg.evals = min(cfg.evals, 3)
        cfg.overrides = {
            "network_def#hidden_size": 64,
            "network_def#mlp_dim": 128,
            "network_def#num_layers": 2,
            "network_def#num_heads": 4,
        }
    if args.image is not None:
        cases = [load_pair(args.image, args.label, args.spatial_dims, args.split_axis, args.binarize, args.downsample)]
    else:
        if not DATA.exists():
            raise SystemExit(f"real data not found at {DATA}: pass --image/--label")
        cases = [load_case(name, args) for name in args.datasets]
    print(
        f"budget {cfg.budget:g} training CPU s per method, {cfg.threads} thread(s), methods {args.methods}; "
        f"torch {torch.__version__}",
        flush=True,
    )
    results = _run_all(cases, args.methods, cfg, args.jobs)
    for case in cases:
        write_report(case, results[case.name], cfg, args.output_dir)
    summary = {
        "config": asdict(cfg),
        "methods": args.methods,
        "results": results,
        "cases": {c.name: {"shape": list(c.train_image.shape), "notes": c.notes} for c in cases},
    }
    (args.output_dir / "results.json").write_text(json.dumps(summary, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
