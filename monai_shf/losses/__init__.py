"""Token losses (they see tensors and a padding mask, never forests)."""

from .token_dice_ce import TokenDiceCELoss

__all__ = ["TokenDiceCELoss"]
