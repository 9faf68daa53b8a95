"""Token networks: SHFViT and its layers (they see tensors, never forests)."""

from .layers import GeomEmbedding, IndexEmbedding, TokenEmbedding, TokenHead
from .shfvit import SHFViT

__all__ = ["SHFViT", "TokenEmbedding", "GeomEmbedding", "IndexEmbedding", "TokenHead"]
