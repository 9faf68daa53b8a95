"""Whole-slide inference: ``segment_slide`` (what ``monai-shf segment-slide`` runs).

The library path of DESIGN.md §7, never the whole slide in memory::

    open_slide -> build_slide_forest -> serialize_slide -> scale 0..255 to 0..1 -> SHFViT -> softmax
               -> write_slide_mask (pyramidal uint8 mask, tile by tile)

The network and the SHF parameters come from a bundle's ``configs/inference.yaml`` (``network_def``,
``length``, ``patch_size``, ``min_size``, ``max_side``, ``kernel_size``, ``thresholds``,
``edge_channel_reduction``, ``edge_kind``, ``intensity_range``), read with ``monai.bundle.ConfigParser``; by default the
repository's ``bundles/shf_wsi_segmentation``, else :data:`DEFAULT_SETTINGS` (the same values). Weights
come from a checkpoint (``--checkpoint``, else the bundle's ``models/best.pt`` or ``models/latest.pt``);
``untrained=True`` runs random weights (timing and smoke tests only).

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

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_shf.bundles import bundle_path, list_bundles
from monai_shf.slide import build_slide_forest, open_slide, serialize_slide, write_slide_mask
from monai_shf.utils import peak_rss_bytes
from monai_shf.validation import check_choice, check_int, check_not_input, check_output_path

__all__ = [
    "DEFAULT_BUNDLE",
    "DEFAULT_SETTINGS",
    "SEGMENT_STAGES",
    "find_bundle",
    "load_settings",
    "find_checkpoint",
    "load_network",
    "peak_rss_bytes",
    "segment_slide",
]

DEFAULT_BUNDLE = "shf_wsi_segmentation"
"""The shipped whole-slide bundle that :func:`find_bundle` returns by default (package data)."""

DEFAULT_SETTINGS: dict[str, Any] = {
    "length": 1024,
    "patch_size": 8,
    "min_size": 2,
    "in_channels": 3,
    "num_classes": 3,
    "max_side": 8192,
    "kernel_size": 3,
    "thresholds": [50, 100],
    "edge_channel_reduction": "max",
    "edge_kind": "soft",
    "intensity_range": [0, 255],
    "network_def": {
        "_target_": "monai_shf.networks.SHFViT",
        "in_channels": "@in_channels",
        "out_channels": "@num_classes",
        "patch_size": "@patch_size",
        "length": "@length",
        "spatial_dims": 2,
        "hidden_size": 256,
        "mlp_dim": 512,
        "num_layers": 6,
        "num_heads": 8,
    },
}
"""Settings used when no bundle is given and the repository's bundle is absent (the values of
``bundles/shf_wsi_segmentation/configs/inference.yaml``)."""

SEGMENT_STAGES = ("setup", "forest", "tokens", "network", "mask")
"""The timed stages of :func:`segment_slide`, in order (``setup``: reading the bundle, building the
network and loading its weights)."""

_CHECKPOINT_NAMES = ("best.pt", "latest.pt")


def find_bundle(bundle: str | os.PathLike | None = None) -> Path | None:
    """The bundle folder to read: ``bundle`` (a folder holding ``configs/inference.yaml``, or the name of a
    shipped bundle, see :func:`monai_shf.bundles.list_bundles`), else the shipped :data:`DEFAULT_BUNDLE`."""
    if bundle is None:
        bundle = DEFAULT_BUNDLE
    if isinstance(bundle, str) and os.sep not in bundle and bundle in list_bundles():
        return bundle_path(bundle)
    if not isinstance(bundle, (str, os.PathLike)):
        raise TypeError(f"bundle must be a folder path, got {type(bundle).__name__}.")
    path = Path(bundle)
    if not (path / "configs" / "inference.yaml").is_file():
        raise ValueError(
            f"bundle {os.fspath(bundle)!r} has no configs/inference.yaml (expected a MONAI bundle folder)."
        )
    return path


def load_settings(bundle: Path | None, overrides: Mapping[str, Any] | None = None) -> Any:
    """A ``monai.bundle.ConfigParser`` over ``bundle``'s ``configs/inference.yaml`` (or
    :data:`DEFAULT_SETTINGS` when ``bundle`` is ``None``), with ``overrides`` applied (config ids such
    as ``"length"`` or ``"network_def#hidden_size"``). Nothing is instantiated here."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    if bundle is None:
        parser.read_config({k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULT_SETTINGS.items()})
    else:
        parser.read_config(str(Path(bundle) / "configs" / "inference.yaml"))
        if "network_def" not in parser:
            raise ValueError(f"{Path(bundle) / 'configs' / 'inference.yaml'} defines no network_def.")
    for key, value in (overrides or {}).items():
        parser[key] = value
    return parser


def find_checkpoint(
    bundle: Path | None, checkpoint: str | os.PathLike | None = None, untrained: bool = False
) -> Path | None:
    """The weights file: ``checkpoint``, else the bundle's ``models/best.pt`` or ``models/latest.pt``;
    ``None`` only with ``untrained=True``. Raises ``ValueError`` naming what was looked for."""
    if checkpoint is not None:
        if not isinstance(checkpoint, (str, os.PathLike)):
            raise TypeError(f"checkpoint must be a file path, got {type(checkpoint).__name__}.")
        if not Path(checkpoint).is_file():
            raise ValueError(f"checkpoint file not found: {os.fspath(checkpoint)}")
        return Path(checkpoint)
    if bundle is not None:
        for name in _CHECKPOINT_NAMES:
            if (Path(bundle) / "models" / name).is_file():
                return Path(bundle) / "models" / name
    if untrained:
        return None
    where = f"looked for {Path(bundle) / 'models'}/{{{','.join(_CHECKPOINT_NAMES)}}}" if bundle else "no bundle found"
    raise ValueError(
        f"no checkpoint: give checkpoint (--checkpoint CKPT) or a bundle with trained weights ({where}); "
        "untrained=True (--untrained) runs random weights, for timing and smoke tests only."
    )


def load_network(parser: Any, checkpoint: Path | None, device: torch.device) -> torch.nn.Module:
    """Instantiate ``network_def`` of ``parser`` and load ``checkpoint`` (a bundle checkpoint, a dict
    whose ``"model"`` entry is the state dict, or a bare state dict) onto ``device``, in eval mode.
    Without a checkpoint the weights are the network's random initialisation under seed 0."""
    # without a checkpoint (untrained=True) the random weights are seeded (0), so timing and smoke runs
    # repeat; forking the RNG leaves the caller's random state as it was
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network = parser.get_parsed_content("network_def", instantiate=True)
    if not isinstance(network, torch.nn.Module):
        raise TypeError(f"network_def must build a torch.nn.Module, got {type(network).__name__}.")
    if checkpoint is not None:
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises several types for a file that is not a checkpoint
            raise ValueError(f"checkpoint {str(checkpoint)!r} cannot be read as a torch checkpoint: {error}") from None
        if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
            state = state["model"]
        if not isinstance(state, Mapping):
            raise ValueError(f"checkpoint {str(checkpoint)!r} holds no state dict (expected a dict with 'model').")
        try:
            network.load_state_dict(state)
        except RuntimeError as error:
            raise ValueError(
                f"checkpoint {str(checkpoint)!r} does not fit the network of network_def "
                f"(length, patch_size and sizes must be those it was trained with): {error}"
            ) from None
    return network.to(device).eval()


def _setting(parser: Any, key: str, default: Any) -> Any:
    return parser.get_parsed_content(key) if key in parser else default


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
) -> dict[str, Any]:
    """Segment a whole slide with an SHF ViT and write its pyramidal mask, never loading the slide whole.

    Args:
        slide: the slide file (anything :func:`~monai_shf.slide.open_slide` reads), RGB with
            ``in_channels`` channels.
        out: the mask ``.tif``; its folder must exist. Written atomically (nothing is left behind on
            error). Tiled 512² deflate BigTIFF pyramid, the slide's level-0 shape and microns per pixel.
        bundle: a bundle folder whose ``configs/inference.yaml`` defines ``network_def`` and the SHF
            parameters; default :func:`find_bundle` (the repository's ``shf_wsi_segmentation``).
        checkpoint: weights; default the bundle's ``models/best.pt`` or ``models/latest.pt``.
        length, patch_size, max_side: override the bundle's ``length`` ``L``, ``patch_size`` ``p`` and
            ``max_side`` (the forest is built on the finest level whose longer side is ``<= max_side``).
            A checkpoint only loads into the ``L`` and ``p`` it was trained with.
        probabilities: write ``K`` channels of uint8-quantised softmax probabilities instead of
            uint8 class labels.
        device: ``"cpu"`` or ``"cuda"`` (the network only; reading and writing run on the CPU).
        untrained: allow running without a checkpoint (random weights: timing and smoke tests).
        overrides: further config ids to set before instantiation (e.g. ``{"network_def#num_layers": 2}``).
        progress: show a tqdm progress bar over the stages (on stderr).

    Returns:
        a dict: ``out`` (Path), ``leaves`` (real tokens ``N <= L``), ``length``, ``patch_size``,
        ``shape`` (slide level-0 ``(H, W)``), ``num_classes``, ``seconds`` (wall time per stage of
        :data:`SEGMENT_STAGES`), ``cpu_seconds`` (the process's CPU time per stage, all threads: a
        measure that a busy machine disturbs less), ``total_seconds``, ``peak_rss_bytes`` (the process's peak so far),
        ``bundle`` and ``checkpoint`` (paths or ``None``).

    Raises:
        ValueError: missing slide, output folder or checkpoint; a slide whose channels differ from
            ``in_channels``; a checkpoint that does not fit ``network_def``; no CUDA for ``device="cuda"``.
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    device = check_choice(device, "device", ("cpu", "cuda"))
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but torch finds no CUDA device; use device='cpu'.")
    if not isinstance(slide, (str, os.PathLike)):
        raise TypeError(f"slide must be a slide file path, got {type(slide).__name__}.")
    if not Path(slide).is_file():
        raise ValueError(f"slide file not found: {os.fspath(slide)}")
    out = check_output_path(out, "out")
    check_not_input(out, slide, "out")
    bundle_path = find_bundle(bundle)
    settings = dict(overrides or {})
    for key, value in (("length", length), ("patch_size", patch_size), ("max_side", max_side)):
        if value is not None:
            settings[key] = check_int(value, key, 1)
    parser = load_settings(bundle_path, settings)
    weights = find_checkpoint(bundle_path, checkpoint, untrained)
    length_ = check_int(_setting(parser, "length", DEFAULT_SETTINGS["length"]), "length", 1)
    patch = check_int(_setting(parser, "patch_size", DEFAULT_SETTINGS["patch_size"]), "patch_size", 1)
    low, high = (float(v) for v in _setting(parser, "intensity_range", DEFAULT_SETTINGS["intensity_range"]))
    if not high > low:
        raise ValueError(f"intensity_range must be (low, high) with high > low, got {(low, high)}.")
    forest_options = {
        "max_side": check_int(_setting(parser, "max_side", DEFAULT_SETTINGS["max_side"]), "max_side", 1),
        "min_size": _setting(parser, "min_size", DEFAULT_SETTINGS["min_size"]),
        "kernel_size": _setting(parser, "kernel_size", DEFAULT_SETTINGS["kernel_size"]),
        "thresholds": tuple(_setting(parser, "thresholds", DEFAULT_SETTINGS["thresholds"])),
        "channel_reduction": _setting(parser, "edge_channel_reduction", DEFAULT_SETTINGS["edge_channel_reduction"]),
        "edge_kind": _setting(parser, "edge_kind", DEFAULT_SETTINGS["edge_kind"]),
    }
    if "criterion" in parser:  # else build_forest's default, as SlidePatchd's
        forest_options["criterion"] = parser.get_parsed_content("criterion")
    network = load_network(parser, weights, torch.device(device))
    in_channels = getattr(network, "in_channels", None)
    seconds: dict[str, float] = {"setup": time.perf_counter() - start}
    cpu_seconds: dict[str, float] = {"setup": time.process_time() - cpu_start}

    from tqdm.auto import tqdm

    with (
        open_slide(slide) as source,
        tqdm(total=len(SEGMENT_STAGES), initial=1, desc=Path(slide).name, unit="stage", disable=not progress) as bar,
    ):
        if in_channels is not None and source.num_channels != in_channels:
            raise ValueError(
                f"slide {os.fspath(slide)} has {source.num_channels} channels but the network expects {in_channels}."
            )
        t, c = time.perf_counter(), time.process_time()
        bar.set_postfix_str("forest")
        # patch_size: the split criterion's cap in level-0 pixels, as SlidePatchd passes it
        forest = build_slide_forest(source, length_, patch_size=patch, **forest_options)
        seconds["forest"], cpu_seconds["forest"] = time.perf_counter() - t, time.process_time() - c
        bar.update()

        t, c = time.perf_counter(), time.process_time()
        bar.set_postfix_str("tokens")
        tokens = serialize_slide(source, forest, patch)  # (C, L, p, p) float32, padding tokens zero
        # as the bundle's ScaleIntensityRanged(a_min=low, a_max=high, b_min=0, b_max=1, clip=True), in place
        tokens -= low
        tokens *= 1.0 / (high - low)
        np.clip(tokens, 0.0, 1.0, out=tokens)
        seconds["tokens"], cpu_seconds["tokens"] = time.perf_counter() - t, time.process_time() - c
        bar.update()

        t, c = time.perf_counter(), time.process_time()
        bar.set_postfix_str("network")
        with torch.inference_mode():
            x = torch.from_numpy(tokens)[None].to(device)  # batch 1: (1, C, L, p, p)
            geom = torch.from_numpy(forest.geom())[None].to(device)
            token_mask = torch.from_numpy(forest.token_mask())[None].to(device)
            logits = network(x, geom=geom, token_mask=token_mask)
            probs = torch.softmax(logits[0].float(), dim=0).cpu().numpy()  # (K, L, p, p)
        del x, logits, tokens
        seconds["network"], cpu_seconds["network"] = time.perf_counter() - t, time.process_time() - c
        bar.update()

        t, c = time.perf_counter(), time.process_time()
        bar.set_postfix_str("mask")
        write_slide_mask(out, forest, probs, like=source, probabilities=probabilities)
        seconds["mask"], cpu_seconds["mask"] = time.perf_counter() - t, time.process_time() - c
        bar.update()
        shape = tuple(int(s) for s in source.shape)
    return {
        "out": out,
        "leaves": forest.num_leaves,
        "length": forest.length,
        "patch_size": patch,
        "shape": shape,
        "num_classes": int(probs.shape[0]),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "total_seconds": time.perf_counter() - start,
        "peak_rss_bytes": peak_rss_bytes(),
        "bundle": bundle_path,
        "checkpoint": weights,
    }
