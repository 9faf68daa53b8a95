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
    ref = DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=0.5, lambda_ce=0.5, smooth_nr=1.0, smooth_dr=1.0)(
        pred, y
    )
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


@pytest.mark.parametrize("sigmoid", [False, True])
def test_nan_and_inf_padding_logits_do_not_leak(sigmoid):
    k = 1 if sigmoid else 3
    pred = _logits(k=k).detach().clone()
    pred[:, :, 7:, 0, 0] = float("nan")
    pred[:, :, 7:, 1, 1] = float("inf")
    pred.requires_grad_(True)
    y = (torch.rand(2, 1, 10, 4, 4) > 0.5).float() if sigmoid else torch.randint(0, 3, (2, 1, 10, 4, 4)).float()
    y[:, :, 7:] = 255
    loss = TokenDiceCELoss(sigmoid=sigmoid)(pred, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()
    assert pred.grad[:, :, 7:].abs().max() == 0


def test_ignored_pixels_inside_real_tokens_are_ignored_in_sigmoid_mode():
    pred = _logits(k=1)
    y = (torch.rand(2, 1, 10, 4, 4) > 0.5).float()
    y[0, 0, 3, 2, 2] = 255
    TokenDiceCELoss(sigmoid=True)(pred, y).backward()
    assert pred.grad[0, 0, 3, 2, 2] == 0 and pred.grad[0, 0, 3].abs().sum() > 0


def test_include_background_false_in_both_modes_matches_monai():
    pred = _logits(k=2)
    y = torch.randint(0, 2, (2, 1, 10, 4, 4)).float()
    onehot = torch.nn.functional.one_hot(y[:, 0].long(), 2).movedim(-1, 1).float()
    # Dice term only: for K > 1 MONAI's DiceCELoss uses softmax cross-entropy even with sigmoid=True,
    # ours uses per-channel BCE (multi-label), so the CE terms differ by design
    ours = TokenDiceCELoss(sigmoid=True, include_background=False, lambda_ce=0.0)(pred, onehot)
    ref = DiceCELoss(
        sigmoid=True, include_background=False, lambda_dice=0.5, lambda_ce=0.0, smooth_nr=1.0, smooth_dr=1.0
    )(pred, onehot)
    assert torch.allclose(ours, ref, atol=1e-6)


def test_half_precision_inputs():
    pred = _logits(length=200).detach().half()
    y = torch.randint(0, 3, (2, 1, 200, 4, 4)).float()
    assert torch.isfinite(TokenDiceCELoss()(pred, y))
