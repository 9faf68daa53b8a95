"""Whole-slide inference: ``segment_slide`` (what ``monai-shf segment-slide`` runs).

A short pipeline of named stages (:data:`SEGMENT_STAGES`), never the whole slide in memory::

    setup   read the bundle's inference config (its ``forest:`` spec, ``network_def``, ``intensity_range``)
            with ``monai.bundle.ConfigParser``, build the network, load its checkpoint
    forest  build_slide_forest(slide, spec)                          -> Forest in level-0 pixels
    tokens  serialize_slide, scaled from intensity_range to [0, 1]   -> (C, L, p, p) float32
    network SHFViT, softmax                                           -> (K, L, p, p) probabilities
    mask    write_slide_mask (pyramidal uint8 mask, tile by tile; class names from the bundle's metadata)
    geojson with ``geojson=``: mask_to_geojson (the mask's polygons as QuPath annotations), not in
            SEGMENT_STAGES (it is optional)

The bundle is by default the shipped ``shf_wsi_segmentation`` (package data). Weights come from a checkpoint
(``--checkpoint``, else the bundle's ``models/best.pt`` or ``models/latest.pt``); ``untrained=True`` runs
random weights (timing and smoke tests only). Bundle configs of 0.1, which set the forest options at the
top level (``length``, ``split_criterion``, ``edge_channel_reduction``, ...), are converted to a spec with
a warning.

This module lives outside ``monai_shf.slide`` because it imports MONAI and torch networks, which the
slide core must not.

Peak memory (bytes per level-0 slide pixel): none of the steps holds a full-resolution array. The
forest step holds one band of the forest level's edge map; tokens, logits and probabilities are
``O(L p^2)`` (``(C + 2K) * L * p^2 * 4`` bytes: 14 MB at ``L = 16384, p = 8, K = 3``); the network's
activations are ``O(L * hidden)`` with fused attention; the mask writer holds a few bands of encoded
tiles. The process's peak is therefore set by torch itself, the decoded-tile cache and the forest
level, not by the slide's area (measured in ``benchmarks/slide.py``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_shf.bundles import apply_overrides, bundle_path, list_bundles
from monai_shf.enums import DeviceKind, look_up
from monai_shf.forest import RENAMED_OPTIONS, Forest, ForestSpec
from monai_shf.networks import load_checkpoint
from monai_shf.slide import (
    Slide,
    build_slide_forest,
    mask_to_geojson,
    open_slide,
    serialize_slide,
    write_slide_mask,
)
from monai_shf.utils import peak_rss_bytes
from monai_shf.validation import check_int, check_not_input, check_output_path

__all__ = [
    "DEFAULT_BUNDLE",
    "SEGMENT_STAGES",
    "find_bundle",
    "load_settings",
    "bundle_forest_spec",
    "bundle_classes",
    "find_checkpoint",
    "load_network",
    "slide_tokens",
    "predict_tokens",
    "segment_slide",
]

DEFAULT_BUNDLE = "shf_wsi_segmentation"
"""The shipped whole-slide bundle that :func:`find_bundle` returns by default (package data)."""

SEGMENT_STAGES = ("setup", "forest", "tokens", "network", "mask")
"""The timed stages of :func:`segment_slide`, in order (``setup``: reading the bundle, building the
network and loading its weights)."""

_CHECKPOINT_NAMES = ("best.pt", "latest.pt")
# top-level ids of 0.1 bundle configs that held the forest options
_LEGACY_IDS = ("length", "patch_size", "min_size", "max_side", "kernel_size", "thresholds", "edge_kind")
_LEGACY_IDS += ("split_criterion", "criterion", "edge_channel_reduction", "fill")


def find_bundle(bundle: str | os.PathLike | None = None) -> Path:
    """The bundle folder to read: ``bundle`` (a folder holding ``configs/inference.yaml``, or the name of a
    shipped bundle, see :func:`monai_shf.bundles.list_bundles`), else the shipped :data:`DEFAULT_BUNDLE`."""
    if bundle is None:
        bundle = DEFAULT_BUNDLE
    if not isinstance(bundle, (str, os.PathLike)):
        raise TypeError(f"bundle must be a folder path or a shipped bundle name, got {type(bundle).__name__}.")
    if isinstance(bundle, str) and bundle in list_bundles() and not Path(bundle).exists():
        return bundle_path(bundle)
    path = Path(bundle)
    if not (path / "configs" / "inference.yaml").is_file():
        raise ValueError(
            f"bundle {os.fspath(bundle)!r} has no configs/inference.yaml (expected a MONAI bundle folder or one "
            f"of the shipped bundles {list_bundles()})."
        )
    return path


def load_settings(bundle: Path, overrides: Mapping[str, Any] | None = None) -> Any:
    """A ``monai.bundle.ConfigParser`` over ``bundle``'s ``configs/inference.yaml`` with ``overrides``
    applied (config ids such as ``"forest#length"`` or ``"network_def#hidden_size"``). Nothing is
    instantiated here.

    Raises:
        ValueError: the config defines no ``network_def``, or an override names an id the config does not
            have (:func:`monai_shf.bundles.apply_overrides`).
    """
    from monai.bundle import ConfigParser

    config = Path(bundle) / "configs" / "inference.yaml"
    parser = ConfigParser()
    parser.read_config(str(config))
    if "network_def" not in parser:
        raise ValueError(f"{config} defines no network_def.")
    return apply_overrides(parser, overrides, config)


def bundle_forest_spec(parser: Any, config: str | os.PathLike = "the bundle config") -> ForestSpec:
    """The :class:`~monai_shf.forest.ForestSpec` of a parsed inference config: its ``forest:`` mapping, or,
    for a bundle config of 0.1 (forest options at the top level), those options converted with a warning."""
    if "forest" in parser:
        return ForestSpec.create(parser.get_parsed_content("forest"))
    legacy = {key: parser.get_parsed_content(key) for key in _LEGACY_IDS if key in parser}
    if "length" not in legacy:
        raise ValueError(f"{config} has no forest: mapping (the forest spec: length, patch_size, ...).")
    options = {RENAMED_OPTIONS.get(key, key): value for key, value in legacy.items()}
    warnings.warn(
        f"{config} sets the forest options at the top level ({sorted(legacy)}), as bundles of 0.1 did; they are "
        f"read as forest: {options}. Move them into a forest: mapping (monai-shf bundle export shows the layout).",
        UserWarning,
        stacklevel=2,
    )
    return ForestSpec.create(options)


def bundle_classes(bundle: Path, num_classes: int) -> dict[int, str]:
    """Names of the ``num_classes`` prediction channels from the bundle's ``configs/metadata.json``: its
    ``labels`` (a list of names, or a mapping from label value to name), else
    ``network_data_format.outputs.pred.channel_def``; ``"class <i>"`` for a channel neither names."""
    meta = Path(bundle) / "configs" / "metadata.json"
    names: dict[int, str] = {}
    if meta.is_file():
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"{meta}: not readable JSON ({error}).") from None
        labels = data.get("labels") if isinstance(data, dict) else None
        if labels is None and isinstance(data, dict):
            pred = data.get("network_data_format", {}).get("outputs", {}).get("pred", {})
            labels = pred.get("channel_def") if isinstance(pred, dict) else None
        if isinstance(labels, list):
            labels = dict(enumerate(labels))
        if isinstance(labels, dict):
            names = {int(k): str(v) for k, v in labels.items() if str(k).isdigit() and str(v).strip()}
    return {c: names.get(c, f"class {c}") for c in range(num_classes)}


def find_checkpoint(bundle: Path, checkpoint: str | os.PathLike | None = None, untrained: bool = False) -> Path | None:
    """The weights file: ``checkpoint``, else the bundle's ``models/best.pt`` or ``models/latest.pt``;
    ``None`` only with ``untrained=True``. Raises ``ValueError`` naming what was looked for."""
    if checkpoint is not None:
        if not isinstance(checkpoint, (str, os.PathLike)):
            raise TypeError(f"checkpoint must be a file path, got {type(checkpoint).__name__}.")
        if not Path(checkpoint).is_file():
            raise ValueError(f"checkpoint file not found: {os.fspath(checkpoint)}")
        return Path(checkpoint)
    for name in _CHECKPOINT_NAMES:
        if (Path(bundle) / "models" / name).is_file():
            return Path(bundle) / "models" / name
    if untrained:
        return None
    raise ValueError(
        f"no checkpoint: give checkpoint (--checkpoint CKPT) or a bundle with trained weights (looked for "
        f"{Path(bundle) / 'models'}/{{{','.join(_CHECKPOINT_NAMES)}}}); untrained=True (--untrained) runs random "
        "weights, for timing and smoke tests only."
    )


def load_network(parser: Any, checkpoint: Path | None, device: torch.device) -> torch.nn.Module:
    """Instantiate ``network_def`` of ``parser`` and load ``checkpoint`` into it
    (:func:`~monai_shf.networks.load_checkpoint`) onto ``device``, in eval mode. Without a checkpoint the
    weights are the network's random initialisation under seed 0."""
    # forking the RNG leaves the caller's random state as it was, and untrained runs repeat
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network = parser.get_parsed_content("network_def", instantiate=True)
    if not isinstance(network, torch.nn.Module):
        raise TypeError(f"network_def must build a torch.nn.Module, got {type(network).__name__}.")
    if checkpoint is not None:
        load_checkpoint(network, checkpoint)
    return network.to(device).eval()


def slide_tokens(slide: Slide, forest: Forest, patch_size: int, intensity_range: tuple[float, float]) -> np.ndarray:
    """``(C, L, p, p)`` float32 tokens of ``slide`` scaled from ``intensity_range`` to ``[0, 1]`` and clipped,
    in place, as the bundle's ``ScaleIntensityRanged(a_min, a_max, b_min=0, b_max=1, clip=True)``."""
    low, high = (float(v) for v in intensity_range)
    if not high > low:
        raise ValueError(f"intensity_range must be (low, high) with high > low, got {(low, high)}.")
    tokens = serialize_slide(slide, forest, patch_size)  # padding tokens zero
    tokens -= low
    tokens *= 1.0 / (high - low)
    np.clip(tokens, 0.0, 1.0, out=tokens)
    return tokens


def predict_tokens(network: torch.nn.Module, tokens: np.ndarray, forest: Forest, device: str) -> np.ndarray:
    """``(K, L, p, p)`` float32 softmax probabilities of the ``(C, L, p, p)`` tokens (batch of one)."""
    with torch.inference_mode():
        x = torch.from_numpy(tokens)[None].to(device)
        geom = torch.from_numpy(forest.geom())[None].to(device)
        token_mask = torch.from_numpy(forest.token_mask())[None].to(device)
        logits = network(x, geom=geom, token_mask=token_mask)
        return torch.softmax(logits[0].float(), dim=0).cpu().numpy()


class _StageClock:
    """Wall and CPU seconds per named stage, and a tqdm bar over :data:`SEGMENT_STAGES` (plus ``extra``
    stages)."""

    def __init__(self, name: str, progress: bool, extra: int = 0) -> None:
        from tqdm.auto import tqdm

        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.bar = tqdm(total=len(SEGMENT_STAGES) + extra, desc=name, unit="stage", disable=not progress)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        self.bar.set_postfix_str(stage)
        t, c = time.perf_counter(), time.process_time()
        yield
        self.seconds[stage], self.cpu_seconds[stage] = time.perf_counter() - t, time.process_time() - c
        self.bar.update()


def _check_geojson(geojson: Any, slide: Any, out: Path, probabilities: bool) -> Path | None:
    """The checked GeoJSON output path (or None): before the run, not after the mask."""
    if geojson is None:
        return None
    if probabilities:
        raise ValueError("geojson needs a label mask: drop probabilities to write annotations.")
    geojson = check_output_path(geojson, "geojson")
    check_not_input(geojson, [slide, out], "geojson")
    if importlib.util.find_spec("shapely") is None:
        raise ImportError("geojson needs shapely: pip install 'monai_shf[annotations]'.")
    return geojson


def _check_inputs(slide: Any, out: Any, device: str) -> Path:
    look_up(device, "device", DeviceKind)
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but torch finds no CUDA device; use device='cpu'.")
    if not isinstance(slide, (str, os.PathLike)):
        raise TypeError(f"slide must be a slide file path, got {type(slide).__name__}.")
    if not Path(slide).is_file():
        raise ValueError(f"slide file not found: {os.fspath(slide)}")
    out = check_output_path(out, "out")
    check_not_input(out, slide, "out")
    return out


def segment_slide(
    slide: str | os.PathLike,
    out: str | os.PathLike,
    bundle: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    length: int | None = None,
    patch_size: int | None = None,
    max_side: int | None = None,
    probabilities: bool = False,
    device: str = "cpu",
    untrained: bool = False,
    overrides: Mapping[str, Any] | None = None,
    progress: bool = False,
    geojson: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Segment a whole slide with an SHF ViT and write its pyramidal mask, never loading the slide whole.

    Args:
        slide: the slide file (anything :func:`~monai_shf.slide.open_slide` reads), RGB with
            ``in_channels`` channels.
        out: the mask ``.tif``; its folder must exist. Written atomically (nothing is left behind on
            error). Tiled 512² deflate BigTIFF pyramid, the slide's level-0 shape and microns per pixel.
        bundle: a bundle folder or shipped bundle name whose ``configs/inference.yaml`` defines
            ``network_def``, the ``forest:`` spec and ``intensity_range``; default :data:`DEFAULT_BUNDLE`.
            Bundles are code (their ``$`` expressions run): use only bundles you trust.
        checkpoint: weights; default the bundle's ``models/best.pt`` or ``models/latest.pt``.
        length, patch_size, max_side: override the spec's ``length`` ``L``, ``patch_size`` ``p`` and
            ``max_side`` (the forest is built on the finest level whose longer side is ``<= max_side``);
            shorthands of ``overrides={"forest#length": ...}``. A checkpoint only loads into the ``L`` and
            ``p`` it was trained with.
        probabilities: write ``K`` channels of uint8-quantised softmax probabilities instead of
            uint8 class labels.
        device: ``"cpu"`` or ``"cuda"`` (the network only; reading and writing run on the CPU).
        untrained: allow running without a checkpoint (random weights: timing and smoke tests).
        overrides: config ids to set before instantiation (e.g. ``{"network_def#num_layers": 2}`` or
            ``{"forest#criterion": "edges"}``); an id the config lacks is an error.
        progress: show a tqdm progress bar over the stages (on stderr).
        geojson: also write the mask's polygons as QuPath annotations to this ``.geojson`` (its folder
            must exist; :func:`~monai_shf.slide.mask_to_geojson`, classes named by :func:`bundle_classes`;
            needs shapely: ``pip install 'monai_shf[annotations]'``). Label masks only.

    Returns:
        a dict: ``out`` (Path), ``forest`` (the :class:`~monai_shf.forest.Forest`), ``spec`` (its
        :class:`~monai_shf.forest.ForestSpec`), ``leaves`` (real tokens ``N <= L``), ``length``,
        ``patch_size``, ``shape`` (slide level-0 ``(H, W)``), ``num_classes``, ``seconds`` (wall time per
        stage of :data:`SEGMENT_STAGES`), ``cpu_seconds`` (the process's CPU time per stage, all threads),
        ``total_seconds``, ``peak_rss_bytes`` (the process's peak so far), ``bundle`` and ``checkpoint``;
        with ``geojson``, ``geojson`` (the :func:`~monai_shf.slide.mask_to_geojson` summary) and
        ``seconds["geojson"]``.

    Raises:
        ValueError: missing slide, output folder or checkpoint; an unknown override or forest option; a
            slide whose channels differ from ``in_channels``; a checkpoint that does not fit ``network_def``;
            no CUDA for ``device="cuda"``.
    """
    start = time.perf_counter()
    out = _check_inputs(slide, out, device)
    geojson = _check_geojson(geojson, slide, out, probabilities)
    clock = _StageClock(Path(slide).name, progress, extra=geojson is not None)
    with clock("setup"):
        bundle_dir = find_bundle(bundle)
        config = bundle_dir / "configs" / "inference.yaml"
        parser = load_settings(bundle_dir, overrides)
        for key, value in (("length", length), ("patch_size", patch_size), ("max_side", max_side)):
            if value is not None:  # a 0.1 config holds these at the top level
                parser[f"forest#{key}" if "forest" in parser else key] = check_int(value, key, 1)
        spec = bundle_forest_spec(parser, config)
        if spec.patch_size is None:
            raise ValueError(f"{config}: the forest spec has no patch_size (the token side p).")
        intensity_range = parser.get_parsed_content("intensity_range") if "intensity_range" in parser else (0, 255)
        weights = find_checkpoint(bundle_dir, checkpoint, untrained)
        network = load_network(parser, weights, torch.device(device))
    with open_slide(slide) as source:
        in_channels = getattr(network, "in_channels", None)
        if in_channels is not None and source.num_channels != in_channels:
            raise ValueError(
                f"slide {os.fspath(slide)} has {source.num_channels} channels but the network expects {in_channels}."
            )
        with clock("forest"):
            forest = build_slide_forest(source, spec)
        with clock("tokens"):
            tokens = slide_tokens(source, forest, spec.patch_size, intensity_range)
        with clock("network"):
            probs = predict_tokens(network, tokens, forest, device)
            del tokens
        with clock("mask"):
            classes = None if probabilities else bundle_classes(bundle_dir, int(probs.shape[0]))
            write_slide_mask(out, forest, probs, like=source, probabilities=probabilities, classes=classes)
        shape = tuple(int(s) for s in source.shape)
    annotations = None
    if geojson is not None:
        with clock("geojson"):
            annotations = mask_to_geojson(out, geojson)
    clock.bar.close()
    return {
        "out": out,
        "forest": forest,
        "spec": spec,
        "leaves": forest.num_leaves,
        "length": forest.length,
        "patch_size": spec.patch_size,
        "shape": shape,
        "num_classes": int(probs.shape[0]),
        "seconds": clock.seconds,
        "cpu_seconds": clock.cpu_seconds,
        "total_seconds": time.perf_counter() - start,
        "peak_rss_bytes": peak_rss_bytes(),
        "bundle": bundle_dir,
        "checkpoint": weights,
        **({} if annotations is None else {"geojson": annotations}),
    }
