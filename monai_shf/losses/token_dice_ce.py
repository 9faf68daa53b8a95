"""Dice + cross-entropy on SHF tokens, blind to padding tokens.

Shapes: ``y_pred`` ``(B, K, L, p, p[, p])`` logits; ``y`` either hard labels ``(B, 1, L, ...)`` (class
indices) or soft/one-hot targets ``(B, K, L, ...)`` (e.g. class fractions from
``HierarchicalPatchd(mode="fraction")``). A token is padding where ``token_mask`` (``(B, L)`` bool) is
False, or, without ``token_mask``, where every target value of the token equals ``ignore_index``
(what the patch transform writes with ``padding_value=ignore_index``). Padding pixels get weight 0 in
both terms, so they contribute exactly nothing to the loss and to its gradient.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["TokenDiceCELoss"]


class TokenDiceCELoss(nn.Module):
    """``lambda_dice * Dice + lambda_ce * CE`` over the real tokens (paper: 0.5 / 0.5, smooth 1.0).

    Args:
        sigmoid: binary/multi-label mode (sigmoid + BCE) instead of softmax + CE.
        include_background: keep channel 0 in the Dice term (as MONAI's DiceLoss, in both modes).
        lambda_dice, lambda_ce: weights of the two terms.
        smooth_nr, smooth_dr: Dice smoothing of numerator and denominator.
        ignore_index: target value that marks padding tokens (and, for hard labels, ignored pixels).
        batch: compute Dice over the whole batch instead of per sample.
    """

    def __init__(
        self,
        sigmoid: bool = False,
        include_background: bool = True,
        lambda_dice: float = 0.5,
        lambda_ce: float = 0.5,
        smooth_nr: float = 1.0,
        smooth_dr: float = 1.0,
        ignore_index: float = 255,
        batch: bool = False,
    ) -> None:
        super().__init__()
        if lambda_dice < 0 or lambda_ce < 0:
            raise ValueError(f"lambda_dice and lambda_ce must be >= 0, got {lambda_dice}, {lambda_ce}.")
        self.sigmoid, self.include_background = sigmoid, include_background
        self.lambda_dice, self.lambda_ce = float(lambda_dice), float(lambda_ce)
        self.smooth_nr, self.smooth_dr = float(smooth_nr), float(smooth_dr)
        self.ignore_index, self.batch = ignore_index, batch

    def _targets(
        self, y_pred: torch.Tensor, y: torch.Tensor, token_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets as float ``(B, K, L, ...)`` and a pixel weight ``(B, 1, L, ...)`` (0 on padding)."""
        if y.ndim != y_pred.ndim or y.shape[0] != y_pred.shape[0] or y.shape[2:] != y_pred.shape[2:]:
            raise ValueError(
                f"y must be (B, 1 or K, L, p, ...) like y_pred {tuple(y_pred.shape)}, got {tuple(y.shape)}."
            )
        k = y_pred.shape[1]
        if k == 1 and not self.sigmoid:
            raise ValueError("softmax needs K >= 2 logit channels; use sigmoid=True for a single channel.")
        ignored = y == self.ignore_index
        if y.shape[1] == 1 and k > 1:
            valid = ~ignored
            index = torch.where(valid, y, torch.zeros_like(y)).long()
            if bool((index < 0).any()) or bool((index >= k).any()):
                raise ValueError(f"hard labels must lie in [0, {k}) or equal ignore_index={self.ignore_index}.")
            target = F.one_hot(index[:, 0], k).movedim(-1, 1).to(y_pred.dtype)
        elif y.shape[1] == k:
            # a pixel is ignored when every channel carries ignore_index (padding tokens: all pixels)
            valid = ~ignored.all(dim=1, keepdim=True)
            target = torch.where(ignored, torch.zeros_like(y), y).to(y_pred.dtype)
        else:
            raise ValueError(f"y must have 1 (class indices) or {k} channels, got {y.shape[1]}.")
        if token_mask is not None:
            if tuple(token_mask.shape) != (y.shape[0], y.shape[2]):
                raise ValueError(
                    f"token_mask must be (B, L) = ({y.shape[0]}, {y.shape[2]}), got {tuple(token_mask.shape)}."
                )
            tokens = token_mask.to(torch.bool).reshape(y.shape[0], 1, y.shape[2], *(1,) * (y.ndim - 3))
            valid = valid & tokens
        return target, valid.to(y_pred.dtype)

    def forward(self, y_pred: torch.Tensor, y: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        # sums in float32 at least (fp16 sums over L p^D pixels overflow)
        y_pred = y_pred if y_pred.dtype in (torch.float32, torch.float64) else y_pred.float()
        target, weight = self._targets(y_pred, y, token_mask)
        # padding logits may hold anything (even NaN/inf): replace them before any arithmetic, so
        # nothing leaks into the sums, and their gradient is exactly zero
        y_pred = torch.where(weight > 0, y_pred, torch.zeros_like(y_pred))
        if self.sigmoid:
            prob = torch.sigmoid(y_pred)
            ce_map = F.binary_cross_entropy_with_logits(y_pred, target, reduction="none")
        else:
            prob = torch.softmax(y_pred, dim=1)
            ce_map = -(target * torch.log_softmax(y_pred, dim=1)).sum(dim=1, keepdim=True)
        ce_map = torch.where(weight > 0, ce_map, torch.zeros_like(ce_map))
        ce = (ce_map * weight).sum() / (weight.sum() * ce_map.shape[1]).clamp(min=1)

        if not self.include_background and prob.shape[1] > 1:
            prob, target = prob[:, 1:], target[:, 1:]
        reduce = [0] + list(range(2, prob.ndim)) if self.batch else list(range(2, prob.ndim))
        intersection = (prob * target * weight).sum(reduce)
        denominator = ((prob + target) * weight).sum(reduce)
        dice = 1.0 - (2.0 * intersection + self.smooth_nr) / (denominator + self.smooth_dr)
        return self.lambda_dice * dice.mean() + self.lambda_ce * ce
