"""Pretrained ViT weights for :class:`~monai_shf.networks.SHFViT`: timm ViTs and SAM's ViT image encoder.

The paper fine-tunes SAM's ViT-B. A ViT's blocks act on a sequence of token embeddings and know
nothing of where the tokens came from, so their weights carry over to SHF tokens unchanged: SHFViT's
blocks use timm's layout and names (``blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``),
and timm's and SAM's ``qkv`` outputs are ordered ``(q|k|v, head, head_dim)`` like ours.

What is mapped, and how:

- **blocks** ``0 .. min(depth, num_layers) - 1``: norms, qkv, attention projection, MLP, copied
  (shapes must match: same ``hidden_size`` and ``mlp_dim``; the head count is not stored in a state
  dict, so build SHFViT with the source's ``num_heads``, 12 for ViT-B). SAM's ``mlp.lin1/lin2`` are
  ``fc1/fc2``. timm's LayerScale (``ls1.gamma``, ``ls2.gamma``) is folded into ``attn.proj`` and
  ``mlp.fc2`` (exact: ``gamma * (W x + b) = (gamma W) x + gamma b``).
- **patch projection**: a ViT's ``patch_embed.proj`` conv ``(hidden, C', k, k)`` with stride ``k`` is a
  linear map of each ``k x k`` patch flattened channel-major, exactly SHFViT's ``token_embed.proj`` with
  ``k = p``. Other sizes are resampled to ``p x p`` (area when shrinking, bilinear when enlarging) and
  scaled by ``k^2 / p^2``, so a token that is the area-mean resample of a patch gets the response the
  patch got (exact for patches constant on the ``k/p`` blocks). Channels: ``C = 1`` sums the source's
  channels (a grey image is the same value in each), other counts repeat them cyclically, scaled by
  ``C' / C`` (timm's ``adapt_input_conv`` rule). 3D: the 2D kernel is inflated along depth and divided
  by ``p`` (I3D), so a volume constant in depth gets the 2D response.
- **final norm** ``norm.*`` (timm ViTs with a class-token pool).

What cannot be mapped (reported as ``unused`` with the reason): absolute position embeddings
``pos_embed`` (a grid's; SHF tokens are forest leaves, positioned by SHFViT's geometry and index
embeddings), ``cls_token``/``reg_token``, classifier ``head``/``fc_norm``, SAM's relative-position
tables ``attn.rel_pos_h/w`` (they index a 64 x 64 patch grid), SAM's convolutional ``neck``, and
SAM's prompt encoder / mask decoder. SAM's window attention (14 x 14 windows in all blocks but
2, 5, 8, 11 of ViT-B) has no parameters: SHFViT attends globally in every block, so the loaded blocks
see wider context than they were trained with. timm and SAM use LayerNorm ``eps=1e-6``: build
SHFViT with ``norm_eps=1e-6`` to compute exactly their blocks' function.

Weights are read from a local file only (``torch.load(weights_only=True)``, or ``.safetensors``
with the safetensors package): nothing is downloaded and no pickled code runs.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from monai_shf.enums import PretrainedSource, look_up, values
from monai_shf.validation import check_int

from .shfvit import SHFViT

__all__ = [
    "PretrainedReport",
    "load_vit_weights",
    "load_pretrained",
    "read_state_dict",
    "load_checkpoint",
    "adapt_patch_kernel",
]

SOURCES = values(PretrainedSource)
_BLOCK_PARAMS = (
    "norm1.weight",
    "norm1.bias",
    "attn.qkv.weight",
    "attn.qkv.bias",
    "attn.proj.weight",
    "attn.proj.bias",
    "norm2.weight",
    "norm2.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
)
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")
# reasons for source keys that have no counterpart (first matching pattern wins)
_UNMAPPABLE = (
    (re.compile(r"^pos_embed$"), "absolute position embedding of a patch grid: SHF tokens are forest leaves"),
    (re.compile(r"^(cls_token|reg_token|dist_token)$"), "SHFViT has no class/register token"),
    (re.compile(r"^(head|head_dist|fc_norm)\."), "classifier: SHFViT's head predicts a mask patch per token"),
    (re.compile(r"^neck\."), "SAM's convolutional neck: SHFViT has a per-token head instead"),
    (re.compile(r"^blocks\.\d+\.attn\.rel_pos_[hw]$"), "relative-position table of a 2D patch grid"),
    (re.compile(r"^blocks\.\d+\.attn\.[qk]_norm\."), "qk-norm: SHFViT's attention has none"),
    (re.compile(r"^(prompt_encoder|mask_decoder)\."), "not part of SAM's image encoder"),
)


@dataclass
class PretrainedReport:
    """What :func:`load_vit_weights` did.

    Attributes:
        source: ``"timm"`` or ``"sam"``.
        loaded: SHFViT parameter names that were overwritten.
        reshaped: SHFViT parameter name -> how its source tensor was transformed on the way.
        missing: SHFViT parameter names left at their initialisation (nothing to load from).
        unused: source key -> why it was not used.
        notes: differences between the source model and SHFViT that are not weights.
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    reshaped: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unused: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"{self.source} weights: {len(self.loaded)} tensors loaded, {len(self.missing)} missing, {len(self.unused)} unused"
        ]
        lines += [f"  reshaped {k}: {v}" for k, v in self.reshaped.items()]
        lines += [f"  missing {k}" for k in self.missing]
        lines += [f"  unused {k}: {v}" for k, v in self.unused.items()]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a local file without running pickled code.

    ``.safetensors`` files need the ``safetensors`` package; anything else goes through
    ``torch.load(map_location="cpu", weights_only=True)``. Checkpoints that nest the weights under
    ``"state_dict"``, ``"model"`` or ``"module"`` are unwrapped.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file holds no tensors, or is not what its name says (e.g. a pickle named
            ``.safetensors``); the message names the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights file {path!r} does not exist (nothing is downloaded).")
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError as error:
            raise ImportError(f"reading {path!r} needs the safetensors package (pip install safetensors).") from error
        try:
            return load_file(path, device="cpu")
        except Exception as error:  # SafetensorError on a pickle (or anything else) under that name
            raise ValueError(
                f"pretrained weights file {path!r} is not a safetensors file ({type(error).__name__}: {error}); "
                "a torch checkpoint needs a .pt / .pth name (it is then read with weights_only=True)."
            ) from error
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpicklable code, a truncated file...: name the file
        raise ValueError(f"weights file {path!r} cannot be read as a weights-only torch checkpoint: {error}") from error
    return _unwrap(loaded, path)


def _unwrap(loaded: object, name: str) -> dict[str, torch.Tensor]:
    while isinstance(loaded, Mapping) and not any(isinstance(v, torch.Tensor) for v in loaded.values()):
        inner = [loaded[k] for k in ("state_dict", "model", "module") if isinstance(loaded.get(k), Mapping)]
        if not inner:
            break
        loaded = inner[0]
    if not isinstance(loaded, Mapping) or not any(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ValueError(f"{name} holds no state dict (a mapping of parameter names to tensors).")
    return {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}


def load_checkpoint(network: torch.nn.Module, path: str | os.PathLike) -> torch.nn.Module:
    """Load the weights file ``path`` into ``network`` strictly, the one checkpoint reader of the package
    (whole-slide inference, ``monai-shf figure``): a bundle checkpoint (``{"model": ...}``), a bare state
    dict or ``.safetensors``, read by :func:`read_state_dict` (never running pickled code).

    Raises:
        ValueError: the file is missing, holds no state dict, or does not fit ``network`` (the message
            names the file and says that ``length``, ``patch_size`` and sizes must be those it was trained with).
    """
    try:
        state = read_state_dict(path)
    except FileNotFoundError:
        raise ValueError(f"checkpoint file not found: {os.fspath(path)}") from None
    try:
        network.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(
            f"checkpoint {os.fspath(path)!r} does not fit the network of network_def (length, patch_size and "
            f"sizes must be those it was trained with): {str(error).splitlines()[0]}"
        ) from None
    return network


def adapt_patch_kernel(weight: torch.Tensor, in_channels: int, patch_size: int, spatial_dims: int) -> torch.Tensor:
    """A ViT's 2D patch-embedding kernel for another patch size, channel count and dimension.

    Args:
        weight: ``(hidden, C', k, k')`` conv kernel (stride = kernel size).
        in_channels: ``C`` of the target.
        patch_size: ``p`` of the target.
        spatial_dims: 2, or 3 to inflate along depth.

    Returns:
        ``(hidden, C, p, p[, p])`` float kernel: ``k^2 / p^2`` times its area (shrinking) or bilinear
        (enlarging) resample, channels summed (``C = 1``) or repeated and scaled by ``C' / C``, and for
        3D repeated over depth and divided by ``p``. The input is not modified.
    """
    check_int(in_channels, "in_channels", 1)
    check_int(patch_size, "patch_size", 1)
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4:
        raise ValueError(f"weight must be a (hidden, C, k, k) conv kernel, got {getattr(weight, 'shape', weight)!r}.")
    kernel = weight.detach().to(torch.float32, copy=True)
    k_h, k_w = kernel.shape[-2:]
    if (k_h, k_w) != (patch_size, patch_size):
        if patch_size <= min(k_h, k_w):
            kernel = F.interpolate(kernel, size=(patch_size, patch_size), mode="area")
        else:
            kernel = F.interpolate(kernel, size=(patch_size, patch_size), mode="bilinear", align_corners=False)
        kernel = kernel * (k_h * k_w / patch_size**2)  # area mean -> block sum: same response to a resampled patch
    source_channels = kernel.shape[1]
    if in_channels != source_channels:
        if in_channels == 1:
            kernel = kernel.sum(dim=1, keepdim=True)
        else:
            repeats = math.ceil(in_channels / source_channels)
            kernel = kernel.repeat(1, repeats, 1, 1)[:, :in_channels] * (source_channels / in_channels)
    if spatial_dims == 3:
        kernel = kernel.unsqueeze(2).expand(-1, -1, patch_size, -1, -1) / patch_size
    return kernel.contiguous()


def _canonical_keys(state_dict: Mapping[str, torch.Tensor], source: str, report: PretrainedReport) -> dict:
    """Source keys -> timm names (SAM: strip ``image_encoder.``, ``mlp.lin1/2`` -> ``mlp.fc1/2``)."""
    renamed = {}
    full_sam = source == "sam" and any(k.startswith(("image_encoder.", "module.image_encoder.")) for k in state_dict)
    for key, value in state_dict.items():
        name = key[len("module.") :] if key.startswith("module.") else key
        if source == "sam":
            if full_sam and not name.startswith("image_encoder."):
                report.unused[key] = "not part of SAM's image encoder"
                continue
            name = name.removeprefix("image_encoder.")
            name = re.sub(r"^(blocks\.\d+\.mlp\.)lin([12])\.", r"\1fc\2.", name)
        renamed[name] = (key, value)
    return renamed


def _fold_layer_scale(
    weights: dict, index: int, branch: str, target: str, report: PretrainedReport
) -> tuple[torch.Tensor, torch.Tensor] | None:
    gamma_entry = weights.pop(f"blocks.{index}.{branch}.gamma", None)
    if gamma_entry is None:
        return None
    gamma = gamma_entry[1].detach().float()
    weight, bias = (weights[f"blocks.{index}.{target}.{p}"][1].detach().float() for p in ("weight", "bias"))
    report.reshaped[f"blocks.{index}.{target}.weight"] = f"LayerScale {branch}.gamma folded in"
    return weight * gamma[:, None], bias * gamma


def load_vit_weights(
    net: SHFViT,
    weights: str | os.PathLike | Mapping[str, torch.Tensor],
    source: str = "timm",
    load_patch_embed: bool = True,
) -> PretrainedReport:
    """Load a timm ViT's or SAM's ViT image encoder's weights into ``net`` (in place).

    Args:
        net: the network to fill.
        weights: a state dict, or the path of a local file holding one (see :func:`read_state_dict`).
            A full SAM checkpoint (``image_encoder.*`` keys) or the encoder's own state dict both work.
        source: ``"timm"`` (``vit_base_patch16_224`` and friends) or ``"sam"``.
        load_patch_embed: also adapt the patch projection into ``token_embed.proj``.

    Returns:
        A :class:`PretrainedReport` (loaded, reshaped, missing, unused, notes).

    Raises:
        TypeError: ``net`` is not an SHFViT.
        ValueError: a block tensor's shape does not fit (different ``hidden_size`` / ``mlp_dim``), the
            source has a qkv bias and ``net`` does not (build it with ``qkv_bias=True``), or no block was
            found.
    """
    if not isinstance(net, SHFViT):
        raise TypeError(f"net must be an SHFViT, got {type(net).__name__}.")
    source = look_up(source, "source", PretrainedSource).value
    name = os.fspath(weights) if isinstance(weights, (str, os.PathLike)) else "weights"
    state_dict = read_state_dict(weights) if isinstance(weights, (str, os.PathLike)) else _unwrap(weights, name)
    report = PretrainedReport(source)
    canonical = _canonical_keys(state_dict, source, report)
    depths = {int(m.group(1)) for m in map(_BLOCK_KEY.match, canonical) if m}
    if not depths:
        raise ValueError(f"{name} has no 'blocks.<i>.' keys: not a {source} ViT state dict.")
    depth = max(depths) + 1
    params = dict(net.named_parameters())
    updates = _block_updates(net, canonical, depth, params, name, report)
    updates.update(_embedding_updates(net, canonical, params, name, report, load_patch_embed))
    with torch.no_grad():
        for target, value in updates.items():
            params[target].copy_(value.to(params[target].dtype))  # copy_: the caller's tensors stay untouched
    _finish_report(net, report, canonical, updates, params, source, load_patch_embed)
    return report


def _block_updates(net: SHFViT, canonical: dict, depth: int, params: dict, name: str, report: PretrainedReport) -> dict:
    """The transformer blocks' tensors (layer scales folded in), taken out of ``canonical``."""
    updates: dict[str, torch.Tensor] = {}
    for index in range(min(depth, net.num_layers)):
        folded = {
            "attn.proj": _fold_layer_scale(canonical, index, "ls1", "attn.proj", report),
            "mlp.fc2": _fold_layer_scale(canonical, index, "ls2", "mlp.fc2", report),
        }
        for param in _BLOCK_PARAMS:
            target = f"blocks.{index}.{param}"  # canonical source names are SHFViT's
            entry = canonical.pop(target, None)
            if entry is None:
                continue
            module_name, kind = param.rsplit(".", 1)
            value = entry[1] if folded.get(module_name) is None else folded[module_name][kind == "bias"]
            if target not in params:  # only the qkv bias can be absent
                raise ValueError(f"{name} has {entry[0]} but net has no qkv bias: build SHFViT(qkv_bias=True).")
            if tuple(value.shape) != tuple(params[target].shape):
                raise ValueError(
                    f"{name}: {entry[0]} has shape {tuple(value.shape)}, net's {target} needs "
                    f"{tuple(params[target].shape)} (hidden_size={net.hidden_size}, mlp_dim={net.mlp_dim})."
                )
            updates[target] = value
    for index in range(depth, net.num_layers):
        report.notes.append(f"block {index}: beyond the source's {depth} blocks, left at its initialisation")
    return updates


def _embedding_updates(
    net: SHFViT, canonical: dict, params: dict, name: str, report: PretrainedReport, load_patch_embed: bool
) -> dict:
    """The patch embedding (adapted to the token shape) and the final norm, taken out of ``canonical``."""
    updates: dict[str, torch.Tensor] = {}
    if load_patch_embed and "patch_embed.proj.weight" in canonical:
        key, kernel = canonical.pop("patch_embed.proj.weight")
        if kernel.ndim != 4 or kernel.shape[0] != net.hidden_size:
            raise ValueError(
                f"{name}: {key} has shape {tuple(kernel.shape)}, expected ({net.hidden_size}, C, k, k) "
                f"(hidden_size={net.hidden_size})."
            )
        adapted = adapt_patch_kernel(kernel, net.in_channels, net.patch_size, net.spatial_dims)
        updates["token_embed.proj.weight"] = adapted.reshape(net.hidden_size, -1)  # channel-major, as the tokens
        if tuple(adapted.shape) != tuple(kernel.shape):
            report.reshaped["token_embed.proj.weight"] = f"{tuple(kernel.shape)} -> {tuple(adapted.shape)}, flattened"
        if "patch_embed.proj.bias" in canonical:
            updates["token_embed.proj.bias"] = canonical.pop("patch_embed.proj.bias")[1]
    for suffix in ("weight", "bias"):
        entry = canonical.get(f"norm.{suffix}")
        if entry is not None and tuple(entry[1].shape) == tuple(params[f"norm.{suffix}"].shape):
            updates[f"norm.{suffix}"] = canonical.pop(f"norm.{suffix}")[1]
    return updates


def _finish_report(
    net: SHFViT,
    report: PretrainedReport,
    canonical: dict,
    updates: dict,
    params: dict,
    source: str,
    load_patch_embed: bool,
) -> None:
    """What was loaded, what is missing, why each unused source tensor was not used, and the caveats."""
    report.loaded = list(updates)
    report.missing = [n for n in params if n not in updates]
    for canonical_name, (key, _) in canonical.items():
        match = _BLOCK_KEY.match(canonical_name)
        reason = next((why for pattern, why in _UNMAPPABLE if pattern.search(canonical_name)), None)
        if reason is None and match and int(match.group(1)) >= net.num_layers:
            reason = f"block beyond num_layers={net.num_layers}"
        elif reason is None and canonical_name.startswith("patch_embed.") and not load_patch_embed:
            reason = "load_patch_embed=False"
        report.unused[key] = reason or "no counterpart in SHFViT"
    report.notes.append(
        f"a state dict does not store the head count: the blocks compute the source's function only if "
        f"net.num_heads ({net.num_heads}) is the source's (12 for ViT-B)"
    )
    eps = {m.eps for m in net.modules() if isinstance(m, torch.nn.LayerNorm)}
    if eps != {1e-6}:
        report.notes.append(f"net's LayerNorm eps {sorted(eps)} vs the source's 1e-6: build SHFViT(norm_eps=1e-6)")
    if source == "sam":
        report.notes.append(
            "SAM's window attention (14 x 14 windows except in its global blocks) has no weights: SHFViT attends "
            "globally in every block; its relative-position tables and neck are not used"
        )


def load_pretrained(
    net: SHFViT, path: str | os.PathLike | None, source: str = "timm", load_patch_embed: bool = True
) -> SHFViT:
    """Bundle helper: :func:`load_vit_weights` from ``path`` into ``net`` and return ``net``.

    An empty or None ``path`` returns ``net`` unchanged (the bundles' default). The report is logged
    (logger ``monai_shf.networks.pretrained``) and kept as ``net.pretrained_report``.
    """
    if not path:
        return net
    report = load_vit_weights(net, path, source, load_patch_embed=load_patch_embed)
    logging.getLogger(__name__).info("pretrained %s from %s:\n%s", source, os.fspath(path), report)
    net.pretrained_report = report
    return net
