"""Out-of-core volume inference: ``segment_volume`` (what ``monai-shf segment-volume`` runs).

The stages of :func:`monai_shf.inference.segment_slide` (:data:`~monai_shf.inference.SEGMENT_STAGES`),
on a multiscale OME-Zarr volume, never the volume in memory::

    setup   the bundle's inference config (its ``forest:`` spec, ``network_def``), the network, its weights
    forest  build_volume_forest(volume, spec)                        -> Forest in level-0 voxels
    tokens  serialize_volume (each leaf from its level), scaled to [0, 1] -> (C, L, p, p, p) float32
    network SHFViT, softmax                                           -> (K, L, p, p, p) probabilities
    mask    write_volume_mask (NGFF multiscale label image, chunk by chunk, atomically)

The bundle is by default the shipped 3D bundle ``shf_3d_segmentation``. Its spec's ``max_side`` is used
when the config sets one (``forest#max_side``); otherwise the score map comes from the finest level of at
most :data:`~monai_shf.volume.VOLUME_MAX_SIDE` (256) voxels a side (a slide-sized default would select
level 0 of any volume). Intensities are scaled to ``[0, 1]`` from ``intensity_range``: the argument, else
the config's ``intensity_range``, else the ``[min, max]`` of the volume's coarsest level.

Peak memory: the forest level's uint8 edge map (at most ``max_side**3`` bytes), the tokens and
probabilities (``(C + 2K) * L * p**3 * 4`` bytes), one read block of the token reader and a few mask
chunks per writer thread; nothing per level-0 voxel (measured in ``benchmarks/volume.py``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_shf.forest import Forest
from monai_shf.inference import (
    SEGMENT_STAGES,
    _StageClock,
    bundle_forest_spec,
    find_bundle,
    find_checkpoint,
    load_network,
    load_settings,
    predict_tokens,
)
from monai_shf.utils import peak_rss_bytes
from monai_shf.validation import check_choice, check_int, check_not_input
from monai_shf.volume import (
    VOLUME_MAX_SIDE,
    Volume,
    build_volume_forest,
    forest_level_of,
    open_volume,
    serialize_volume,
    write_volume_mask,
)

__all__ = ["DEFAULT_VOLUME_BUNDLE", "segment_volume", "volume_tokens", "volume_intensity_range"]

DEFAULT_VOLUME_BUNDLE = "shf_3d_segmentation"
"""The shipped bundle :func:`segment_volume` runs by default."""


def volume_intensity_range(volume: Volume) -> tuple[float, float]:
    """``(min, max)`` of the volume's coarsest level (one small read), ``(0, 1)`` for a constant volume."""
    level = volume.level_count - 1
    x = volume.read(level, (0, 0, 0), volume.level_shapes[level])
    low, high = float(x.min()), float(x.max())
    return (low, high) if high > low else (0.0, 1.0)


def volume_tokens(volume: Volume, forest: Forest, patch_size: int, intensity_range: tuple[float, float]) -> np.ndarray:
    """``(C, L, p, p, p)`` float32 tokens scaled from ``intensity_range`` to ``[0, 1]`` and clipped, in place
    (the bundles' ``ScaleIntensityRanged(a_min, a_max, 0, 1, clip=True)``); padding tokens zero before scaling."""
    low, high = (float(v) for v in intensity_range)
    if not high > low:
        raise ValueError(f"intensity_range must be (low, high) with high > low, got {(low, high)}.")
    tokens = serialize_volume(volume, forest, patch_size)
    tokens -= low
    tokens *= 1.0 / (high - low)
    np.clip(tokens, 0.0, 1.0, out=tokens)
    return tokens


def _check_inputs(volume: Any, out: Any, device: str) -> tuple[Volume, Path]:
    check_choice(device, "device", ("cpu", "cuda"))
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but torch finds no CUDA device; use device='cpu'.")
    source = open_volume(volume)
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a store path (a folder such as mask.zarr), got {type(out).__name__}.")
    out = Path(out)
    if not out.parent.is_dir():
        raise ValueError(f"out: the folder of {out} does not exist.")
    check_not_input(out, source.path, "out")
    return source, out


def segment_volume(
    volume: str | os.PathLike,
    out: str | os.PathLike,
    bundle: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    length: int | None = None,
    patch_size: int | None = None,
    max_side: int | None = None,
    intensity_range: tuple[float, float] | None = None,
    device: str = "cpu",
    untrained: bool = False,
    overrides: Mapping[str, Any] | None = None,
    progress: bool = False,
    chunk: int = 128,
    workers: int = 2,
) -> dict[str, Any]:
    """Segment a multiscale OME-Zarr volume with an SHF ViT and write its NGFF label image.

    Args:
        volume: the image store (:func:`~monai_shf.volume.open_volume`), ``in_channels`` channels.
        out: the mask store (a folder, e.g. ``mask.zarr``); its parent must exist. Written atomically:
            a uint8 ``z, y, x`` label image with the volume's level-0 shape, spacing and unit.
        bundle: a bundle folder or shipped name (default :data:`DEFAULT_VOLUME_BUNDLE`). Bundles are code.
        checkpoint: weights; default the bundle's ``models/best.pt`` or ``models/latest.pt``.
        length, patch_size, max_side: override the spec's ``L``, ``p`` and ``max_side``.
        intensity_range: ``(low, high)`` scaled to ``[0, 1]`` (module docstring for the default).
        device: ``"cpu"`` or ``"cuda"`` (the network only).
        untrained: allow running without a checkpoint (random weights: timing and smoke tests).
        overrides: config ids to set (e.g. ``{"network_def#num_layers": 2}``); unknown ids are errors.
        progress: a tqdm bar over the stages.
        chunk: cubic chunk side of the mask (128: fewer leaf-chunk intersections to render than 64).
        workers: mask writer threads.

    Returns:
        a dict as :func:`~monai_shf.inference.segment_slide`'s (``shape`` is level-0 ``(D, H, W)``) plus
        ``forest_level`` and ``intensity_range``.

    Raises:
        ValueError: a bad store (no multiscales, levels, chunks), a missing output folder or checkpoint, an
            output that is the input, a volume whose channels differ from ``in_channels``, no CUDA.
    """
    # one straight pipeline of the stages above, as segment_slide's; each stage is a call of its own
    start = time.perf_counter()
    source, out = _check_inputs(volume, out, device)
    clock = _StageClock(Path(source.path).name, progress)
    with clock("setup"):
        bundle_dir = find_bundle(DEFAULT_VOLUME_BUNDLE if bundle is None else bundle)
        config = bundle_dir / "configs" / "inference.yaml"
        parser = load_settings(bundle_dir, overrides)
        if max_side is None and "forest" in parser and "forest#max_side" not in parser:
            max_side = VOLUME_MAX_SIDE
        for key, value in (("length", length), ("patch_size", patch_size), ("max_side", max_side)):
            if value is not None:
                parser[f"forest#{key}" if "forest" in parser else key] = check_int(value, key, 1)
        spec = bundle_forest_spec(parser, config)
        if spec.patch_size is None:
            raise ValueError(f"{config}: the forest spec has no patch_size (the token side p).")
        if intensity_range is None and "intensity_range" in parser:
            intensity_range = tuple(parser.get_parsed_content("intensity_range"))
        weights = find_checkpoint(bundle_dir, checkpoint, untrained)
        network = load_network(parser, weights, torch.device(device))
    in_channels = getattr(network, "in_channels", None)
    if in_channels is not None and source.num_channels != in_channels:
        raise ValueError(f"{source.path} has {source.num_channels} channels but the network expects {in_channels}.")
    with clock("forest"):
        forest = build_volume_forest(source, spec)
    with clock("tokens"):
        if intensity_range is None:
            intensity_range = volume_intensity_range(source)
        tokens = volume_tokens(source, forest, spec.patch_size, intensity_range)
    with clock("network"):
        probs = predict_tokens(network, tokens, forest, device)
        del tokens
    with clock("mask"):
        write_volume_mask(out, forest, probs, like=source, chunk=chunk, workers=workers)
    clock.bar.close()
    return {
        "out": out,
        "forest": forest,
        "spec": spec,
        "forest_level": forest_level_of(source, spec.max_side, spec.forest_level),
        "leaves": forest.num_leaves,
        "length": forest.length,
        "patch_size": spec.patch_size,
        "shape": tuple(int(s) for s in source.shape),
        "num_classes": int(probs.shape[0]),
        "intensity_range": tuple(float(v) for v in intensity_range),
        "seconds": clock.seconds,
        "cpu_seconds": clock.cpu_seconds,
        "total_seconds": time.perf_counter() - start,
        "peak_rss_bytes": peak_rss_bytes(),
        "bundle": bundle_dir,
        "checkpoint": weights,
        "stages": SEGMENT_STAGES,
    }
