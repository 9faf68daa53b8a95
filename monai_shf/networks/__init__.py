"""Token networks: SHFViT and its layers (they see tensors, never forests)."""

from .layers import Attention, Block, DropPath, GeomEmbedding, IndexEmbedding, Mlp, TokenEmbedding, TokenHead
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
]
