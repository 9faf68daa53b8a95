"""monai_shf.networks: SHFViT and its layers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from monai_shf.networks import SHFViT, TokenEmbedding, TokenHead


def _tiny(**kwargs):
    args = dict(
        in_channels=3, out_channels=2, patch_size=4, length=16, hidden_size=32, mlp_dim=64, num_layers=2, num_heads=4
    )
    args.update(kwargs)
    return SHFViT(**args).eval()


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_shapes(spatial_dims):
    net = _tiny(spatial_dims=spatial_dims)
    x = torch.rand((2, 3, 16) + (4,) * spatial_dims)
    geom = torch.rand(2, 16, 2 * spatial_dims)
    mask = torch.ones(2, 16, dtype=torch.bool)
    assert net(x, geom, mask).shape == (2, 2, 16) + (4,) * spatial_dims
    assert net(x).shape == (2, 2, 16) + (4,) * spatial_dims
    assert net.forward_features(x, geom, mask).shape == (2, 16, 32)


@pytest.mark.parametrize("flash", [False, True])
def test_padding_tokens_cannot_change_real_outputs(flash):
    net = _tiny(use_flash_attention=flash)
    x = torch.rand(2, 3, 16, 4, 4)
    geom = torch.rand(2, 16, 4)
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[0, 11:] = False
    mask[1, 14:] = False
    out = net(x, geom, mask)
    x2, geom2 = x.clone(), geom.clone()
    x2[0, :, 11:] = torch.randn(3, 5, 4, 4) * 100
    x2[1, :, 14:] = -50
    geom2[0, 11:] = 7.0
    out2 = net(x2, geom2, mask)
    assert torch.allclose(out[0, :, :11], out2[0, :, :11], atol=1e-6) and torch.allclose(
        out[1, :, :14], out2[1, :, :14], atol=1e-6
    )
    x2[0, :, 12] = float("nan")  # not even NaN content of a padding token reaches real tokens
    assert torch.isfinite(net(x2, geom2, mask)[0, :, :11]).all()
    x2[0, :, 12] = 0
    # without the mask the same change does leak into real tokens
    assert not torch.allclose(net(x, geom)[0, :, :11], net(x2, geom2)[0, :, :11])


def test_geometry_and_index_embeddings_can_be_switched_off():
    x, geom = torch.rand(1, 3, 16, 4, 4), torch.rand(1, 16, 4)
    plain = _tiny(use_geom_embedding=False, use_index_embedding=False)
    assert plain.geom_embed is None and plain.index_embed is None
    assert torch.equal(plain(x, geom), plain(x))  # geometry ignored when switched off
    net = _tiny()
    assert torch.count_nonzero(net.index_embed.weight) == 0  # zero-initialised (the paper's choice)
    with torch.no_grad():
        net.geom_embed.mlp[-1].weight.normal_()
    assert not torch.allclose(net(x, geom), net(x))


def test_flash_attention_matches_the_explicit_attention():
    plain = _tiny()
    flash = _tiny(use_flash_attention=True)
    flash.load_state_dict(plain.state_dict())
    x, geom = torch.rand(2, 3, 16, 4, 4), torch.rand(2, 16, 4)
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[1, 12:] = False
    assert torch.allclose(plain(x, geom, mask)[:, :, :12], flash(x, geom, mask)[:, :, :12], atol=1e-5)


def test_every_parameter_gets_a_gradient():
    net = _tiny().train()
    out = net(torch.rand(2, 3, 16, 4, 4), torch.rand(2, 16, 4), torch.ones(2, 16, dtype=torch.bool))
    out.square().mean().backward()
    assert [n for n, p in net.named_parameters() if p.grad is None] == []  # DDP needs no unused parameters


def test_traces_with_one_tensor():
    net = _tiny()
    x = torch.rand(1, 3, 16, 4, 4)
    traced = torch.jit.trace(net, x)
    assert torch.allclose(traced(x), net(x), atol=1e-6)


def test_layers_memory_layout():
    embed = TokenEmbedding(2, 3, 2, 8)
    x = torch.zeros(1, 2, 5, 3, 3)
    x[0, 1, 4, 2, 0] = 1.0  # channel 1, token 4, pixel (2, 0) -> flat index 1 * 9 + 2 * 3 + 0 = 15
    with torch.no_grad():
        embed.proj.weight.zero_()
        embed.proj.bias.zero_()
        embed.proj.weight[0, 15] = 1.0
    assert embed(x)[0, 4, 0] == 1.0 and embed(x)[0, :4].abs().sum() == 0
    head = TokenHead(8, 2, 3, 2)
    assert head(torch.rand(1, 5, 8)).shape == (1, 2, 5, 3, 3)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(spatial_dims=4), ValueError, "spatial_dims"),
        (dict(hidden_size=30), ValueError, "divisible"),
        (dict(length=0), ValueError, "length"),
        (dict(patch_size=2.0), TypeError, "patch_size"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        _tiny(**kwargs)


def test_bad_inputs_name_the_argument():
    net = _tiny()
    with pytest.raises(ValueError, match="x must be"):
        net(torch.rand(1, 3, 15, 4, 4))
    with pytest.raises(ValueError, match="geom"):
        net(torch.rand(1, 3, 16, 4, 4), torch.rand(1, 16, 3))
    with pytest.raises(ValueError, match="token_mask"):
        net(torch.rand(1, 3, 16, 4, 4), None, torch.ones(1, 15, dtype=torch.bool))


@pytest.mark.parametrize("flash", [False, True])
def test_dropout_only_while_training(flash):
    # with use_flash_attention=True MONAI's block applied attention dropout in eval() too
    torch.manual_seed(0)
    net = _tiny(use_flash_attention=flash, dropout_rate=0.3, drop_path_rate=0.3)
    x, geom = torch.rand(2, 3, 16, 4, 4), torch.rand(2, 16, 4)
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[1, 10:] = False
    with torch.no_grad():
        assert torch.equal(net(x, geom, mask), net(x, geom, mask))
        net.train()
        assert not torch.allclose(net(x, geom, mask), net(x, geom, mask))


OLD_CHECKPOINT = Path(__file__).parent / "data" / "shfvit_monai_blocks_cf890ef.pt"


@pytest.mark.parametrize("flash", [False, True])
def test_checkpoint_of_the_monai_block_network_loads_with_identical_outputs(flash):
    # written by SHFViT built from MONAI's TransformerBlock (main at cf890ef): in_channels=3, out_channels=2,
    # patch_size=2, length=8, hidden_size=16, mlp_dim=32, num_layers=2, num_heads=2, qkv_bias=True, with
    # its inputs and eval() logits
    old = torch.load(OLD_CHECKPOINT, weights_only=True)
    assert "blocks.1.attn.out_proj.weight" in old["state_dict"] and "blocks.0.mlp.linear2.bias" in old["state_dict"]
    net = SHFViT(
        3, 2, 2, 8, hidden_size=16, mlp_dim=32, num_layers=2, num_heads=2, qkv_bias=True, use_flash_attention=flash
    ).eval()
    result = net.load_state_dict(old["state_dict"])
    assert not result.missing_keys and not result.unexpected_keys
    logits = net(old["x"], old["geom"], old["token_mask"])
    assert torch.allclose(logits, old["logits"], atol=2e-6)  # identical up to float32 rounding (op order)
    assert torch.equal(net.blocks[1].attn.proj.weight, old["state_dict"]["blocks.1.attn.out_proj.weight"])


@pytest.mark.parametrize("flash", [False, True])
def test_a_sample_without_real_tokens_stays_finite(flash):
    net = _tiny(use_flash_attention=flash)
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[1] = False  # nothing real in sample 1: its outputs are ignored, but must not poison the batch
    out = net(torch.rand(2, 3, 16, 4, 4), torch.rand(2, 16, 4), mask)
    assert torch.isfinite(out).all()


def test_save_attn_keeps_the_attention_weights():
    net = _tiny(save_attn=True)
    mask = torch.ones(1, 16, dtype=torch.bool)
    mask[0, 12:] = False
    net(torch.rand(1, 3, 16, 4, 4), None, mask)
    weights = net.blocks[1].attn.attn_map
    assert weights.shape == (1, 4, 16, 16) and torch.count_nonzero(weights[..., 12:]) == 0
    with pytest.raises(ValueError, match="save_attn"):
        _tiny(save_attn=True, use_flash_attention=True)
