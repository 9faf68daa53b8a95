"""monai_shf.networks.layers: the timm-style attention, MLP, drop-path and transformer block."""

from __future__ import annotations

import pytest
import torch
from monai.networks.blocks import TransformerBlock

from monai_shf.networks.layers import Attention, Block, DropPath, Mlp


def _key_mask(batch: int = 2, length: int = 10) -> torch.Tensor:
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, 7:] = False
    mask[1, 9:] = False
    return mask


@pytest.mark.parametrize("fused", [False, True])
def test_attention_dropout_only_while_training(fused):
    torch.manual_seed(0)
    attn = Attention(16, 4, attn_drop=0.5, proj_drop=0.5, fused=fused)
    x = torch.randn(2, 10, 16)
    attn.eval()
    assert torch.equal(attn(x, _key_mask()), attn(x, _key_mask()))
    attn.train()
    assert not torch.allclose(attn(x, _key_mask()), attn(x, _key_mask()))


def test_fused_and_explicit_attention_agree_and_ignore_masked_keys():
    torch.manual_seed(0)
    explicit = Attention(16, 4, qkv_bias=True, fused=False, save_attn=True).eval()
    fused = Attention(16, 4, qkv_bias=True, fused=True).eval()
    fused.load_state_dict(explicit.state_dict())
    x, mask = torch.randn(2, 10, 16), _key_mask()
    out = explicit(x, mask)
    assert torch.allclose(out, fused(x, mask), atol=1e-6)
    weights = explicit.attn_map
    assert weights.shape == (2, 4, 10, 10)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4, 10))
    assert torch.count_nonzero(weights[0, :, :, 7:]) == 0 and torch.count_nonzero(weights[1, :, :, 9:]) == 0
    x2 = x.clone()
    x2[0, 7:] = 1e3  # masked keys (and values) cannot change what the others see
    assert torch.allclose(explicit(x2, mask)[0, :7], out[0, :7], atol=1e-6)
    assert not torch.allclose(explicit(x2)[0, :7], explicit(x)[0, :7])


def test_explicit_init_is_timms():
    torch.manual_seed(0)
    attn, mlp = Attention(64, 4, qkv_bias=True), Mlp(64, 256)
    for linear in (attn.qkv, attn.proj, mlp.fc1, mlp.fc2):
        assert 0.018 < linear.weight.std() < 0.022  # PyTorch's default would be 1 / sqrt(3 * 64) = 0.072
        assert torch.count_nonzero(linear.bias) == 0


def test_drop_path_drops_whole_samples_only_while_training():
    torch.manual_seed(0)
    drop = DropPath(0.5)
    x = torch.ones(64, 3, 5)
    assert torch.equal(drop.eval()(x), x)
    y = drop.train()(x)
    per_sample = y.flatten(1)
    kept = per_sample[:, 0] > 0
    assert 0 < int(kept.sum()) < 64  # some samples dropped, some kept
    assert torch.equal(per_sample[kept], torch.full_like(per_sample[kept], 2.0))  # kept ones scaled by 1/(1-p)
    assert torch.count_nonzero(per_sample[~kept]) == 0


@pytest.mark.parametrize("fused", [False, True])
def test_block_loads_monai_transformer_block_weights_with_the_same_function(fused):
    torch.manual_seed(0)
    monai_block = TransformerBlock(16, 32, 4, qkv_bias=True, use_flash_attention=fused).eval()
    with torch.no_grad():
        for p in monai_block.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # LayerNorms away from their identity init
    state = monai_block.state_dict()
    keys = list(state)
    assert "attn.out_proj.weight" in keys and "mlp.linear1.weight" in keys and "norm_cross_attn.weight" in keys
    block = Block(16, 4, 32, qkv_bias=True, fused=fused).eval()
    assert not block.load_state_dict(state).missing_keys
    assert list(state) == keys  # the caller's dict is left as it was
    x, mask = torch.randn(2, 10, 16), _key_mask()
    attn_mask = mask[:, None, None, :] if fused else mask  # MONAI's two mask conventions
    assert torch.allclose(block(x, mask), monai_block(x, attn_mask=attn_mask), atol=1e-6)


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda: Attention(10, 4), ValueError, "divisible"),
        (lambda: Attention(16, 4, attn_drop=1.5), ValueError, "attn_drop"),
        (lambda: Attention(16, 4, fused=True, save_attn=True), ValueError, "save_attn"),
        (lambda: Mlp(16, 0), ValueError, "hidden_features"),
        (lambda: Mlp(16, 32, drop="0.1"), TypeError, "drop"),
        (lambda: DropPath(1.0), ValueError, "drop_prob"),
    ],
)
def test_bad_layer_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()
