"""SHFViT: a plain ViT over SHF tokens, built from MONAI's ``TransformerBlock``.

``x (B, C, L, p, p[, p])`` -> token embedding (+ geometry embedding + index embedding) -> ``num_layers``
transformer blocks (padding tokens masked out of attention) -> per-token head ->
``(B, K, L, p, p[, p])`` logits. No convolutional decoder: depatching rebuilds the full-resolution
mask from the per-token predictions.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import TransformerBlock
from torch import nn

from monai_shf.validation import check_int

from .layers import GeomEmbedding, IndexEmbedding, TokenEmbedding, TokenHead

__all__ = ["SHFViT"]


class SHFViT(nn.Module):
    """Vision transformer on a sequence of ``L`` SHF tokens.

    Args:
        in_channels: image channels ``C``.
        out_channels: classes ``K`` (logit channels).
        patch_size: token side ``p``.
        length: token budget ``L``.
        spatial_dims: 2 (quadtree tokens ``p x p``) or 3 (octree tokens ``p^3``).
        hidden_size, mlp_dim, num_layers, num_heads: ViT size, in MONAI's ViT vocabulary
            (ViT-B: 768, 3072, 12, 12; tests use tiny sizes).
        dropout_rate: dropout in the blocks.
        qkv_bias: bias of the qkv projection.
        geom_features: width ``F`` of ``geom`` (default ``2 * spatial_dims``, as written by
            :class:`~monai_shf.transforms.HierarchicalPatchd`).
        use_geom_embedding: add an MLP embedding of ``geom`` when it is given.
        use_index_embedding: add the learned, zero-initialised sequence-index embedding.
        save_attn: keep the attention matrices (for inspection; not with flash attention).
        use_flash_attention: use PyTorch's fused ``scaled_dot_product_attention`` (memory linear in
            ``L``; the padding mask is passed to it as a key mask).

    ``forward(x, geom=None, token_mask=None)``: ``geom`` ``(B, L, F)`` float, ``token_mask`` ``(B, L)``
    bool (True for real tokens). Padding tokens are masked out of every attention (as keys), so their
    content cannot change the outputs of real tokens. With ``x`` alone the network runs on content and
    index only (as MONAI's ``verify_net_in_out`` and TorchScript tracing call it).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        patch_size: int,
        length: int,
        spatial_dims: int = 2,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_layers: int = 12,
        num_heads: int = 12,
        dropout_rate: float = 0.0,
        qkv_bias: bool = False,
        geom_features: int | None = None,
        use_geom_embedding: bool = True,
        use_index_embedding: bool = True,
        save_attn: bool = False,
        use_flash_attention: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("patch_size", patch_size),
            ("length", length),
            ("hidden_size", hidden_size),
            ("mlp_dim", mlp_dim),
            ("num_layers", num_layers),
            ("num_heads", num_heads),
        ):
            check_int(value, name, 1)
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads}).")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.patch_size, self.length, self.spatial_dims = patch_size, length, spatial_dims
        self.use_flash_attention = use_flash_attention
        self.geom_features = 2 * spatial_dims if geom_features is None else check_int(geom_features, "geom_features", 1)
        self.token_embed = TokenEmbedding(in_channels, patch_size, spatial_dims, hidden_size)
        self.geom_embed = GeomEmbedding(self.geom_features, hidden_size) if use_geom_embedding else None
        self.index_embed = IndexEmbedding(length, hidden_size) if use_index_embedding else None
        self.blocks = nn.ModuleList(
            TransformerBlock(
                hidden_size,
                mlp_dim,
                num_heads,
                dropout_rate,
                qkv_bias=qkv_bias,
                save_attn=save_attn,
                use_flash_attention=use_flash_attention,
            )
            for _ in range(num_layers)
        )
        for block in self.blocks:
            # MONAI builds this norm even without cross-attention; unused parameters break DDP
            block.norm_cross_attn = nn.Identity()
        self.norm = nn.LayerNorm(hidden_size)
        self.head = TokenHead(hidden_size, out_channels, patch_size, spatial_dims)

    def _check_inputs(self, x: torch.Tensor, geom: torch.Tensor | None, token_mask: torch.Tensor | None) -> None:
        expected = (self.in_channels, self.length) + (self.patch_size,) * self.spatial_dims
        if x.ndim != 2 + 1 + self.spatial_dims or tuple(x.shape[1:]) != expected:
            raise ValueError(f"x must be (B, {', '.join(map(str, expected))}) tokens, got {tuple(x.shape)}.")
        b = x.shape[0]
        if geom is not None and tuple(geom.shape) != (b, self.length, self.geom_features):
            raise ValueError(
                f"geom must be (B, L, F) = ({b}, {self.length}, {self.geom_features}), got {tuple(geom.shape)}."
            )
        if token_mask is not None and tuple(token_mask.shape) != (b, self.length):
            raise ValueError(f"token_mask must be (B, L) = ({b}, {self.length}), got {tuple(token_mask.shape)}.")

    def forward_features(
        self, x: torch.Tensor, geom: torch.Tensor | None = None, token_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(B, C, L, p, ...)`` tokens -> ``(B, L, hidden)`` normalised features."""
        if not torch.jit.is_tracing():
            self._check_inputs(x, geom, token_mask)
        h = self.token_embed(x)
        if self.geom_embed is not None and geom is not None:
            h = h + self.geom_embed(geom.to(h.dtype))
        if self.index_embed is not None:
            h = h + self.index_embed()
        mask = None if token_mask is None else token_mask.to(torch.bool)
        attn_mask = mask
        if mask is not None:
            h = torch.where(mask[..., None], h, torch.zeros_like(h))  # padding tokens carry nothing (not even NaN)
            if self.use_flash_attention:  # MONAI hands the mask to SDPA as is: make it (B, 1, 1, L)
                attn_mask = mask[:, None, None, :]
        for block in self.blocks:
            h = block(h, attn_mask=attn_mask)
        return self.norm(h)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, L, hidden)`` -> ``(B, K, L, p, ...)`` logits."""
        return self.head(features)

    def forward(
        self, x: torch.Tensor, geom: torch.Tensor | None = None, token_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, geom, token_mask))
