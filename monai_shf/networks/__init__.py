"""Token networks: SHFViT and its layers (they see tensors, never forests)."""

from .layers import Attention, Block, DropPath, GeomEmbedding, IndexEmbedding, Mlp, TokenEmbedding, TokenHead
from .pretrained import (
    PretrainedReport,
    adapt_patch_kernel,
    load_checkpoint,
    load_pretrained,
    load_vit_weights,
    read_state_dict,
)
from .shfvit import SHFViT

__all__ = [
    "SHFViT",
    "TokenEmbedding",
    "GeomEmbedding",
    "IndexEmbedding",
    "TokenHead",
    "Attention",
    "Mlp",
    "DropPath",
    "Block",
    "PretrainedReport",
    "load_vit_weights",
    "load_pretrained",
    "read_state_dict",
    "load_checkpoint",
    "adapt_patch_kernel",
]
