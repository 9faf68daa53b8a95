"""SHFViT: a plain ViT over SHF tokens, built from our own timm-style :class:`~.layers.Block`.

``x (B, C, L, p, p[, p])`` -> token embedding (+ geometry embedding + index embedding) -> ``num_layers``
pre-norm transformer blocks (padding tokens masked out of attention as keys) -> final LayerNorm ->
per-token head -> ``(B, K, L, p, p[, p])`` logits. No convolutional decoder: depatching rebuilds the
full-resolution mask from the per-token predictions.

Parameter layout (timm's ViT names, so timm/SAM weights map one to one, see :mod:`.pretrained`):
``token_embed.proj`` ``(hidden, C * p^D)`` (a ViT's patch-embedding conv flattened channel-major),
``blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``, ``head.proj``, plus
``geom_embed.mlp`` and ``index_embed.weight`` ``(1, L, hidden)``. Init: timm's for the blocks (trunc-normal
std 0.02, zero biases), PyTorch's default for the embedding and head, zero for the index embedding and
the geometry MLP's last layer. Activation memory per block: ``(B, L, 3 * hidden)`` for qkv and
``(B, L, mlp_dim)`` for the MLP; the explicit attention adds ``(B, heads, L, L)``, the fused one does not
keep it for backward on the flash/memory-efficient kernels.
"""

from __future__ import annotations

import torch
from torch import nn

from monai_shf.validation import check_int

from .layers import Block, GeomEmbedding, IndexEmbedding, TokenEmbedding, TokenHead

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
        dropout_rate: dropout in the blocks (attention weights, attention output, MLP), active only in
            ``train()``.
        qkv_bias: bias of the qkv projection (timm's and SAM's ViTs have one).
        geom_features: width ``F`` of ``geom`` (default ``2 * spatial_dims``, as written by
            :class:`~monai_shf.transforms.HierarchicalPatchd`).
        use_geom_embedding: add an MLP embedding of ``geom`` when it is given.
        use_index_embedding: add the learned, zero-initialised sequence-index embedding.
        save_attn: keep each block's attention weights in ``blocks[i].attn.attn_map`` (explicit
            attention only: not with ``use_flash_attention``).
        use_flash_attention: use PyTorch's fused ``scaled_dot_product_attention`` (memory linear in
            ``L``; the padding mask is passed to it as a key mask).
        drop_path_rate: stochastic depth, rising linearly from 0 in the first block to this rate in the
            last (timm's rule); 0 disables it.
        norm_eps: epsilon of every LayerNorm (1e-5 as before; timm's and SAM's ViTs use 1e-6: set it
            when fine-tuning their weights for exactly their function).

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
        drop_path_rate: float = 0.0,
        norm_eps: float = 1e-5,
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
        if use_flash_attention and save_attn:
            raise ValueError("save_attn needs the explicit attention: set use_flash_attention=False.")
        self.hidden_size, self.mlp_dim, self.num_layers, self.num_heads = hidden_size, mlp_dim, num_layers, num_heads
        self.blocks = nn.ModuleList(
            Block(
                hidden_size,
                num_heads,
                mlp_dim,
                qkv_bias=qkv_bias,
                drop=dropout_rate,
                drop_path=drop_path_rate * i / max(num_layers - 1, 1),
                norm_eps=norm_eps,
                fused=use_flash_attention,
                save_attn=save_attn,
            )
            for i in range(num_layers)
        )
        self.norm = nn.LayerNorm(hidden_size, eps=norm_eps)
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
        key_mask = None
        if token_mask is not None:
            mask = token_mask.to(torch.bool)
            h = torch.where(mask[..., None], h, torch.zeros_like(h))  # padding tokens carry nothing (not even NaN)
            # a sample with no real token attends to all (its outputs are ignored) instead of a 0/0 softmax
            key_mask = mask | ~mask.any(dim=1, keepdim=True)
        for block in self.blocks:
            h = block(h, key_mask)
        return self.norm(h)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, L, hidden)`` -> ``(B, K, L, p, ...)`` logits."""
        return self.head(features)

    def forward(
        self, x: torch.Tensor, geom: torch.Tensor | None = None, token_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, geom, token_mask))
