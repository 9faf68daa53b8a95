"""monai_shf.losses: padding-aware token Dice + CE."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DiceCELoss

from monai_shf.losses import TokenDiceCELoss


def _logits(b=2, k=3, length=10, p=4):
    torch.manual_seed(0)
    return torch.randn(b, k, length, p, p, requires_grad=True)


def test_matches_monai_dice_ce_without_padding():
    pred = _logits()
    y = torch.randint(0, 3, (2, 1, 10, 4, 4)).float()
    ours = TokenDiceCELoss()(pred, y)
    ref = DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=0.5, lambda_ce=0.5, smooth_nr=1.0, smooth_dr=1.0)(pred, y)
    assert torch.allclose(ours, ref, atol=1e-6)


@pytest.mark.parametrize("how", ["ignore_index", "token_mask", "soft"])
def test_padding_contributes_nothing_to_loss_or_gradient(how):
    pred = _logits()
    y = torch.randint(0, 3, (2, 1, 10, 4, 4)).float()
    loss_fn = TokenDiceCELoss()
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[:, 7:] = False
    if how == "ignore_index":
        y[:, :, 7:] = 255
        loss = loss_fn(pred, y)
    elif how == "token_mask":
        loss = loss_fn(pred, y, token_mask=mask)
    else:
        y = torch.nn.functional.one_hot(y[:, 0].long(), 3).movedim(-1, 1).float()
        y[:, :, 7:] = 255
        loss = loss_fn(pred, y)
    loss.backward()
    assert pred.grad[:, :, 7:].abs().max() == 0  # exactly zero
    assert pred.grad[:, :, :7].abs().max() > 0
    ref = TokenDiceCELoss()(pred.detach()[:, :, :7], y[:, :, :7])  # the loss of the real tokens alone
    assert torch.allclose(loss, ref, atol=1e-6)


def test_padding_content_does_not_change_the_loss():
    pred = _logits()
    y = torch.randint(0, 3, (2, 1, 10, 4, 4)).float()
    y[:, :, 8:] = 255
    base = TokenDiceCELoss()(pred, y)
    other = pred.detach().clone()
    other[:, :, 8:] = 1e4
    assert torch.allclose(TokenDiceCELoss()(other, y), base)


def test_sigmoid_binary_and_soft_targets():
    pred = _logits(k=1)
    y = (torch.rand(2, 1, 10, 4, 4) > 0.5).float()
    loss = TokenDiceCELoss(sigmoid=True)(pred, y)
    ref = DiceCELoss(sigmoid=True, lambda_dice=0.5, lambda_ce=0.5, smooth_nr=1.0, smooth_dr=1.0)(pred, y)
    assert torch.allclose(loss, ref, atol=1e-6)
    soft = torch.rand(2, 3, 10, 4, 4)
    soft = soft / soft.sum(1, keepdim=True)
    assert torch.isfinite(TokenDiceCELoss()(_logits(), soft))


def test_perfect_prediction_scores_near_zero():
    y = torch.randint(0, 2, (1, 1, 10, 4, 4))
    logits = torch.nn.functional.one_hot(y[:, 0], 2).movedim(-1, 1).float() * 40 - 20
    assert TokenDiceCELoss()(logits, y.float()) < 0.01


def test_bad_inputs():
    pred = _logits()
    with pytest.raises(ValueError, match="y must"):
        TokenDiceCELoss()(pred, torch.zeros(2, 1, 9, 4, 4))
    with pytest.raises(ValueError, match="channels"):
        TokenDiceCELoss()(pred, torch.zeros(2, 2, 10, 4, 4))
    with pytest.raises(ValueError, match="lie in"):
        TokenDiceCELoss()(pred, torch.full((2, 1, 10, 4, 4), 7.0))
    with pytest.raises(ValueError, match="token_mask"):
        TokenDiceCELoss()(pred, torch.zeros(2, 1, 10, 4, 4), token_mask=torch.ones(2, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match="sigmoid"):
        TokenDiceCELoss()(_logits(k=1), torch.zeros(2, 1, 10, 4, 4))
    with pytest.raises(ValueError, match="lambda"):
        TokenDiceCELoss(lambda_ce=-1)
