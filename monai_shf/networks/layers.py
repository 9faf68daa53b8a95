"""Small layers of the token transformer, in timm's spirit: one job each, explicit arguments.

Memory layout: tokens enter as ``(B, C, L, p, p[, p])`` (MONAI's channel-first view of tokens) and
are flattened per token to ``(B, L, C * p^D)``, channel-major (``(c, i, j[, k])`` order).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TokenEmbedding", "GeomEmbedding", "IndexEmbedding", "TokenHead"]


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
