"""Small layers of the token transformer, in timm's spirit: one job each, explicit arguments.

Memory layout: tokens enter as ``(B, C, L, p, p[, p])`` (MONAI's channel-first view of tokens) and
are flattened per token to ``(B, L, C * p^D)``, channel-major (``(c, i, j[, k])`` order).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks import layers as monai_layers
from torch import nn

from monai_shf.validation import check_int

__all__ = ["TokenEmbedding", "GeomEmbedding", "IndexEmbedding", "TokenHead", "Attention", "Mlp", "DropPath", "Block"]


class TokenEmbedding(nn.Module):
    """Linear embedding of whole tokens: ``(B, C, L, p, ...)`` -> ``(B, L, hidden)``.

    Args:
        in_channels: ``C``.
        patch_size: token side ``p``.
        spatial_dims: ``D`` (2 or 3).
        hidden_size: embedding width.
    """

    def __init__(self, in_channels: int, patch_size: int, spatial_dims: int, hidden_size: int) -> None:
        super().__init__()
        self.in_channels, self.patch_size, self.spatial_dims = in_channels, patch_size, spatial_dims
        self.proj = nn.Linear(in_channels * patch_size**spatial_dims, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, length = x.shape[:3]
        tokens = x.movedim(2, 1).reshape(b, length, c * self.patch_size**self.spatial_dims)
        return self.proj(tokens)


class GeomEmbedding(nn.Module):
    """Two-layer MLP over per-token geometry ``(B, L, F)`` (normalised leaf centre and log2 size)
    -> ``(B, L, hidden)``. The last layer starts at zero, so the embedding starts neutral."""

    def __init__(self, geom_features: int, hidden_size: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(geom_features, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, geom: torch.Tensor) -> torch.Tensor:
        return self.mlp(geom)


class IndexEmbedding(nn.Module):
    """Learned position-in-sequence embedding ``(1, L, hidden)``, zero-initialised (the paper's
    choice: it can learn the Z-order layout of the forest, or stay out of the way)."""

    def __init__(self, length: int, hidden_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, length, hidden_size))

    def forward(self) -> torch.Tensor:
        return self.weight


class TokenHead(nn.Module):
    """Per-token linear head: ``(B, L, hidden)`` -> ``(B, K, L, p, ...)`` mask-patch logits."""

    def __init__(self, hidden_size: int, out_channels: int, patch_size: int, spatial_dims: int) -> None:
        super().__init__()
        self.out_channels, self.patch_size, self.spatial_dims = out_channels, patch_size, spatial_dims
        self.proj = nn.Linear(hidden_size, out_channels * patch_size**spatial_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length = x.shape[:2]
        shape = (b, length, self.out_channels) + (self.patch_size,) * self.spatial_dims
        return self.proj(x).reshape(shape).movedim(2, 1)


def _init_linear(linear: nn.Linear) -> None:
    """timm's ViT init: truncated normal (std 0.02) weights, zero bias."""
    nn.init.trunc_normal_(linear.weight, std=0.02)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


class Attention(nn.Module):
    """Multi-head self-attention, timm layout: ``qkv`` ``Linear(dim, 3 * dim)`` then ``proj``.

    ``qkv``'s output features are ordered ``(3, num_heads, head_dim)`` (q, k, v outermost), so
    ``qkv.weight`` is ``(3 * dim, dim)`` exactly as in timm's ``Attention``, SAM's image encoder and
    MONAI's ``SABlock`` (whose ``out_proj`` is our ``proj``): their weights load unchanged.

    Args:
        dim: token width ``hidden``.
        num_heads: heads; ``dim`` must be divisible by it.
        qkv_bias: bias of the ``qkv`` projection.
        attn_drop: dropout on the attention weights, applied only while ``self.training``.
        proj_drop: dropout after ``proj``.
        fused: PyTorch's fused ``scaled_dot_product_attention`` (no ``L x L`` matrix kept for
            backward on the flash/memory-efficient kernels); False computes the softmax explicitly.
        save_attn: keep the last ``(B, heads, L, L)`` attention weights in ``attn_map`` (explicit
            path only, so it cannot be combined with ``fused``).

    ``forward(x, key_mask=None)``: ``x`` ``(B, L, dim)``; ``key_mask`` ``(B, L)`` bool, True for the
    keys each query may attend to (every row must keep at least one key). Returns ``(B, L, dim)``.
    Peak extra memory: the ``(B, L, 3 * dim)`` qkv tensor, plus ``(B, heads, L, L)`` on the explicit
    path.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        fused: bool = True,
        save_attn: bool = False,
    ) -> None:
        super().__init__()
        check_int(dim, "dim", 1)
        check_int(num_heads, "num_heads", 1)
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads}).")
        if fused and save_attn:
            raise ValueError("save_attn needs the explicit attention: use fused=False (use_flash_attention=False).")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim**-0.5
        self.attn_drop = _check_rate(attn_drop, "attn_drop")
        self.fused, self.save_attn = fused, save_attn
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(_check_rate(proj_drop, "proj_drop"))
        self.attn_map: torch.Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _init_linear(self.qkv)
        _init_linear(self.proj)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, length, dim = x.shape
        q, k, v = self.qkv(x).reshape(b, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, L): broadcast over heads, queries
        dropout_p = (
            self.attn_drop if self.training else 0.0
        )  # dropout only in training (MONAI's fused block applied it in eval() too)
        if self.fused:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=self.scale)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            if mask is not None:
                attn = attn.masked_fill(~mask, float("-inf"))
            attn = attn.softmax(dim=-1)
            if self.save_attn:
                self.attn_map = attn.detach()
            x = F.dropout(attn, dropout_p) @ v
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, length, dim)))


class Mlp(nn.Module):
    """timm's ``Mlp``: ``fc1`` -> GELU -> dropout -> ``fc2`` -> dropout, ``(B, L, dim)`` -> ``(B, L, dim)``.

    Args:
        dim: token width.
        hidden_features: width of the hidden layer (``mlp_dim``).
        drop: dropout after the activation and after ``fc2``.
    """

    def __init__(self, dim: int, hidden_features: int, drop: float = 0.0) -> None:
        super().__init__()
        check_int(hidden_features, "hidden_features", 1)
        drop = _check_rate(drop, "drop")
        self.fc1 = nn.Linear(dim, hidden_features)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, dim)
        self.drop2 = nn.Dropout(drop)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _init_linear(self.fc1)
        _init_linear(self.fc2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class DropPath(monai_layers.DropPath):
    """Stochastic depth per sample (MONAI's ``DropPath``, timm's): while training, zero a residual branch
    for a random ``drop_prob`` fraction of the batch and scale the rest by ``1 / (1 - drop_prob)``;
    identity in ``eval()``. ``(B, ...)`` -> ``(B, ...)``. ``drop_prob`` must be in ``[0, 1)`` (1 would
    drop every branch and divide by zero)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__(_check_rate(drop_prob, "drop_prob", upper_open=True))

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class Block(nn.Module):
    """Pre-norm transformer block (timm's ``Block``): ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``.

    Args:
        dim: token width ``hidden``.
        num_heads: attention heads.
        mlp_dim: MLP hidden width.
        qkv_bias: bias of the qkv projection.
        drop: dropout on the attention weights, after the attention projection and inside the MLP
            (MONAI's ``TransformerBlock`` uses one rate for all of them); only while training.
        drop_path: stochastic-depth rate of both residual branches.
        norm_eps: LayerNorm epsilon (PyTorch's 1e-5; timm's and SAM's ViTs were trained with 1e-6).
        fused: fused ``scaled_dot_product_attention`` (see :class:`Attention`).
        save_attn: keep the attention weights (explicit path only).

    ``forward(x, key_mask=None)``: ``(B, L, dim)`` -> ``(B, L, dim)``; ``key_mask`` as in :class:`Attention`.

    State dicts of MONAI's ``TransformerBlock`` (``attn.out_proj``, ``mlp.linear1``/``linear2``,
    ``norm_cross_attn``), which SHFViT used before, are renamed on load: old checkpoints load unchanged.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        qkv_bias: bool = False,
        drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-5,
        fused: bool = True,
        save_attn: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, drop, drop, fused=fused, save_attn=save_attn)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_dim, drop)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x), key_mask))
        return x + self.drop_path2(self.mlp(self.norm2(x)))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors):
        # ``state_dict`` is load_state_dict's own shallow copy: renaming in it leaves the caller's dict alone
        for old, new in _MONAI_BLOCK_RENAMES.items():
            for suffix in ("weight", "bias"):
                if prefix + old + suffix in state_dict:
                    state_dict[prefix + new + suffix] = state_dict.pop(prefix + old + suffix)
        for key in [k for k in state_dict if k.startswith(prefix + "norm_cross_attn.")]:
            del state_dict[key]  # MONAI built this norm without cross-attention; it was never used
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors)


# MONAI TransformerBlock parameter names (SHFViT before the own blocks) -> ours (timm's)
_MONAI_BLOCK_RENAMES = {"attn.out_proj.": "attn.proj.", "mlp.linear1.": "mlp.fc1.", "mlp.linear2.": "mlp.fc2."}


def _check_rate(value: float, name: str, upper_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float in [0, 1], got {type(value).__name__}.")
    if not 0.0 <= value < 1.0 if upper_open else not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1{')' if upper_open else ']'}, got {value!r}.")
    return float(value)
