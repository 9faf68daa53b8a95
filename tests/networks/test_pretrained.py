"""monai_shf.networks.pretrained: timm / SAM ViT weights into SHFViT."""

from __future__ import annotations

import datetime
import logging
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from monai_shf.networks import SHFViT, adapt_patch_kernel, load_pretrained, load_vit_weights, read_state_dict

DIM, HEADS, MLP, DEPTH = 32, 4, 128, 3


def _timm_state_dict(depth: int = DEPTH, layer_scale: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with the names and shapes of timm's VisionTransformer(patch_size=16, embed_dim=32,
    depth, num_heads=4, mlp_ratio=4, qkv_bias=True, img_size=32)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.1):
        return torch.randn(*shape, generator=g) * scale

    sd = {
        "cls_token": rand(1, 1, DIM),
        "pos_embed": rand(1, 5, DIM),
        "patch_embed.proj.weight": rand(DIM, 3, 16, 16, scale=0.02),
        "patch_embed.proj.bias": rand(DIM),
        "norm.weight": 1 + rand(DIM),
        "norm.bias": rand(DIM),
        "head.weight": rand(10, DIM),
        "head.bias": rand(10),
    }
    for i in range(depth):
        sd.update(
            {
                f"blocks.{i}.norm1.weight": 1 + rand(DIM),
                f"blocks.{i}.norm1.bias": rand(DIM),
                f"blocks.{i}.attn.qkv.weight": rand(3 * DIM, DIM, scale=0.3),
                f"blocks.{i}.attn.qkv.bias": rand(3 * DIM),
                f"blocks.{i}.attn.proj.weight": rand(DIM, DIM, scale=0.3),
                f"blocks.{i}.attn.proj.bias": rand(DIM),
                f"blocks.{i}.norm2.weight": 1 + rand(DIM),
                f"blocks.{i}.norm2.bias": rand(DIM),
                f"blocks.{i}.mlp.fc1.weight": rand(MLP, DIM, scale=0.3),
                f"blocks.{i}.mlp.fc1.bias": rand(MLP),
                f"blocks.{i}.mlp.fc2.weight": rand(DIM, MLP, scale=0.3),
                f"blocks.{i}.mlp.fc2.bias": rand(DIM),
            }
        )
        if layer_scale:
            sd[f"blocks.{i}.ls1.gamma"] = rand(DIM, scale=1.0)
            sd[f"blocks.{i}.ls2.gamma"] = rand(DIM, scale=1.0)
    return sd


def _timm_blocks_reference(x: torch.Tensor, sd: dict, depth: int, eps: float = 1e-6) -> torch.Tensor:
    """timm's ViT trunk after the embeddings, written out from timm/models/vision_transformer.py (``Block``:
    ``x + ls1(attn(norm1(x)))``, ``x + ls2(mlp(norm2(x)))``, then ``norm``) and timm/layers/attention.py
    (``qkv.reshape(B, N, 3, heads, head_dim).permute(2, 0, 3, 1, 4)``, scale ``head_dim ** -0.5``)."""
    b, n, c = x.shape
    for i in range(depth):

        def w(name, i=i):
            return sd[f"blocks.{i}.{name}"]

        y = F.layer_norm(x, (c,), w("norm1.weight"), w("norm1.bias"), eps)
        q, k, v = (
            F.linear(y, w("attn.qkv.weight"), w("attn.qkv.bias"))
            .reshape(b, n, 3, HEADS, c // HEADS)
            .permute(2, 0, 3, 1, 4)
        )
        y = ((q * (c // HEADS) ** -0.5) @ k.transpose(-2, -1)).softmax(-1) @ v
        y = F.linear(y.transpose(1, 2).reshape(b, n, c), w("attn.proj.weight"), w("attn.proj.bias"))
        x = x + (y * sd[f"blocks.{i}.ls1.gamma"] if f"blocks.{i}.ls1.gamma" in sd else y)
        y = F.layer_norm(x, (c,), w("norm2.weight"), w("norm2.bias"), eps)
        y = F.linear(
            F.gelu(F.linear(y, w("mlp.fc1.weight"), w("mlp.fc1.bias"))), w("mlp.fc2.weight"), w("mlp.fc2.bias")
        )
        x = x + (y * sd[f"blocks.{i}.ls2.gamma"] if f"blocks.{i}.ls2.gamma" in sd else y)
    return F.layer_norm(x, (c,), sd["norm.weight"], sd["norm.bias"], eps)


def _net(**kwargs) -> SHFViT:
    args = dict(
        in_channels=3,
        out_channels=2,
        patch_size=16,
        length=4,
        hidden_size=DIM,
        mlp_dim=MLP,
        num_layers=DEPTH,
        num_heads=HEADS,
        qkv_bias=True,
        norm_eps=1e-6,
    )
    args.update(kwargs)
    return SHFViT(**args).eval()


def _trunk(net: SHFViT, h: torch.Tensor) -> torch.Tensor:
    for block in net.blocks:
        h = block(h)
    return net.norm(h)


def _patches(image: torch.Tensor, k: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, L, k, k) tokens of the k x k grid in raster order (a ViT's patch order)."""
    b, c, h, w = image.shape
    return image.reshape(b, c, h // k, k, w // k, k).permute(0, 1, 2, 4, 3, 5).reshape(b, c, -1, k, k)


@pytest.mark.parametrize("layer_scale", [False, True])
def test_timm_layout_gives_timms_function(layer_scale):
    sd = _timm_state_dict(layer_scale=layer_scale)
    before = {k: v.clone() for k, v in sd.items()}
    net = _net()
    report = load_vit_weights(net, sd, "timm")
    assert sd.keys() == before.keys() and all(torch.equal(sd[k], before[k]) for k in sd)  # input untouched
    h = torch.randn(2, 7, DIM)
    with torch.no_grad():
        assert torch.allclose(_trunk(net, h), _timm_blocks_reference(h, sd, DEPTH), atol=1e-5)
    # patch embedding: the conv of a ViT on the image == SHFViT's token embedding of the same patches
    image = torch.rand(2, 3, 32, 32)
    conv = F.conv2d(image, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=16)
    assert torch.allclose(net.token_embed(_patches(image, 16)), conv.flatten(2).transpose(1, 2), atol=1e-5)
    assert set(report.unused) == {"cls_token", "pos_embed", "head.weight", "head.bias"}
    assert "pos_embed" in report.unused and "grid" in report.unused["pos_embed"]
    assert "blocks.0.attn.qkv.weight" in report.loaded and "norm.weight" in report.loaded
    assert set(report.missing) == {n for n, _ in net.named_parameters() if n.startswith(("geom_", "index_", "head."))}
    assert ("blocks.1.attn.proj.weight" in report.reshaped) == layer_scale


@pytest.fixture()
def timm():
    """timm (a test dependency), imported for one test and unloaded after it.

    torchvision's wheels on PyPI are built against CUDA torch: with a CPU-only torch build its C ops
    library does not load, and ``import torchvision`` then fails while registering fake kernels for
    those ops (``torchvision/_meta_registrations.py``). timm needs torchvision's Python transforms,
    never its C ops, so in that case the import goes ahead without the meta registrations. The
    modules are removed again afterwards, so no other test sees this torchvision."""
    before = set(sys.modules)
    try:
        import torchvision  # noqa: F401
    except ImportError:
        pytest.skip("torchvision (a dependency of timm) is not installed")
    except RuntimeError as error:
        if "does not exist" not in str(error):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
    try:
        yield pytest.importorskip("timm", reason="timm (a test dependency) is not installed")
    finally:
        for name in set(sys.modules) - before:
            if name.split(".")[0] in ("torchvision", "timm"):
                del sys.modules[name]


def test_timm_model_itself(timm):
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0).eval()
    net = _net(hidden_size=192, mlp_dim=768, num_layers=12, num_heads=3, length=196)
    report = load_vit_weights(net, model.state_dict(), "timm")
    assert not [k for k in report.unused if k.startswith("blocks.")]
    h = torch.randn(2, 196, 192)
    with torch.no_grad():
        assert torch.allclose(_trunk(net, h), model.norm(model.blocks(h)), atol=1e-5)
        image = torch.rand(1, 3, 224, 224)
        assert torch.allclose(net.token_embed(_patches(image, 16)), model.patch_embed(image), atol=1e-5)


def _sam_state_dict(depth: int = 4) -> dict[str, torch.Tensor]:
    """Synthetic tensors with the names/shapes of a full SAM checkpoint (ViT image encoder, dim 32, 4 heads,
    a 4 x 4 patch grid, neck to 16 channels), prompt encoder and mask decoder stand-ins."""
    g = torch.Generator().manual_seed(3)
    sd = {
        "image_encoder.patch_embed.proj.weight": torch.randn(DIM, 3, 16, 16, generator=g) * 0.02,
        "image_encoder.patch_embed.proj.bias": torch.randn(DIM, generator=g),
        "image_encoder.pos_embed": torch.randn(1, 4, 4, DIM, generator=g),
        "image_encoder.neck.0.weight": torch.randn(16, DIM, 1, 1, generator=g),
        "image_encoder.neck.1.weight": torch.ones(16),
        "image_encoder.neck.1.bias": torch.zeros(16),
        "image_encoder.neck.2.weight": torch.randn(16, 16, 3, 3, generator=g),
        "image_encoder.neck.3.weight": torch.ones(16),
        "image_encoder.neck.3.bias": torch.zeros(16),
        "prompt_encoder.point_embeddings.0.weight": torch.randn(1, 16, generator=g),
        "mask_decoder.iou_token.weight": torch.randn(1, 16, generator=g),
    }
    for i in range(depth):
        p = f"image_encoder.blocks.{i}."
        sd.update(
            {
                p + "norm1.weight": 1 + 0.1 * torch.randn(DIM, generator=g),
                p + "norm1.bias": 0.1 * torch.randn(DIM, generator=g),
                p + "attn.qkv.weight": 0.3 * torch.randn(3 * DIM, DIM, generator=g),
                p + "attn.qkv.bias": 0.1 * torch.randn(3 * DIM, generator=g),
                p + "attn.proj.weight": 0.3 * torch.randn(DIM, DIM, generator=g),
                p + "attn.proj.bias": 0.1 * torch.randn(DIM, generator=g),
                p + "attn.rel_pos_h": torch.randn(7, DIM // HEADS, generator=g),
                p + "attn.rel_pos_w": torch.randn(7, DIM // HEADS, generator=g),
                p + "norm2.weight": 1 + 0.1 * torch.randn(DIM, generator=g),
                p + "norm2.bias": 0.1 * torch.randn(DIM, generator=g),
                p + "mlp.lin1.weight": 0.3 * torch.randn(MLP, DIM, generator=g),
                p + "mlp.lin1.bias": 0.1 * torch.randn(MLP, generator=g),
                p + "mlp.lin2.weight": 0.3 * torch.randn(DIM, MLP, generator=g),
                p + "mlp.lin2.bias": 0.1 * torch.randn(DIM, generator=g),
            }
        )
    return sd


def test_sam_image_encoder_maps_blocks_and_reports_the_rest():
    sd = _sam_state_dict(depth=4)
    net = _net(num_layers=2, in_channels=1, patch_size=8)
    report = load_vit_weights(net, sd, "sam")
    block = net.blocks[1]
    assert torch.equal(block.mlp.fc1.weight, sd["image_encoder.blocks.1.mlp.lin1.weight"])
    assert torch.equal(block.attn.qkv.bias, sd["image_encoder.blocks.1.attn.qkv.bias"])
    assert torch.equal(block.norm2.weight, sd["image_encoder.blocks.1.norm2.weight"])
    # the blocks compute SAM's global-attention blocks (without relative positions), written as timm's
    canonical = {
        k.removeprefix("image_encoder.").replace("lin1", "fc1").replace("lin2", "fc2"): v for k, v in sd.items()
    }
    h = torch.randn(1, 6, DIM)
    with torch.no_grad():
        expected = _timm_blocks_reference(
            h, {**canonical, "norm.weight": net.norm.weight, "norm.bias": net.norm.bias}, 2
        )
        assert torch.allclose(_trunk(net, h), expected, atol=1e-5)
    assert "relative-position" in report.unused["image_encoder.blocks.0.attn.rel_pos_h"]
    assert "neck" in report.unused["image_encoder.neck.2.weight"]
    assert "image encoder" in report.unused["prompt_encoder.point_embeddings.0.weight"]
    assert "num_layers" in report.unused["image_encoder.blocks.3.mlp.lin2.bias"]
    assert "grid" in report.unused["image_encoder.pos_embed"]
    assert "norm.weight" in report.missing  # SAM has a neck, not a final norm
    assert report.reshaped["token_embed.proj.weight"] == "(32, 3, 16, 16) -> (32, 1, 8, 8), flattened"
    assert any("window attention" in note for note in report.notes)
    # the encoder's own state dict (no image_encoder. prefix) maps the same
    encoder_only = {k.removeprefix("image_encoder."): v for k, v in sd.items() if k.startswith("image_encoder.")}
    other = _net(num_layers=2, in_channels=1, patch_size=8)
    load_vit_weights(other, encoder_only, "sam")
    assert all(torch.equal(a, b) for a, b in zip(other.blocks.parameters(), net.blocks.parameters()))


def test_fewer_or_more_source_blocks():
    deep = _net(num_layers=5)
    init = deep.blocks[4].mlp.fc1.weight.clone()
    report = load_vit_weights(deep, _timm_state_dict(depth=3), "timm")
    assert torch.equal(deep.blocks[4].mlp.fc1.weight, init) and "blocks.3.attn.qkv.weight" in report.missing
    assert any("block 3" in note for note in report.notes)
    shallow = _net(num_layers=1)
    report = load_vit_weights(shallow, _timm_state_dict(depth=3), "timm")
    assert report.unused["blocks.2.norm1.weight"] == "block beyond num_layers=1"


def test_patch_kernel_shrunk_gives_the_response_of_the_patch():
    sd = _timm_state_dict()
    net = _net(patch_size=8)
    load_vit_weights(net, sd, "timm")
    # a 16 x 16 patch constant on 2 x 2 blocks is exactly its 8 x 8 area resample
    small = torch.rand(2, 3, 2, 8, 8)
    full = small.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)
    weight, bias = sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"]
    expected = torch.einsum("bclij,ocij->blo", full, weight) + bias
    assert torch.allclose(net.token_embed(small), expected, atol=1e-5)


def test_patch_kernel_channels_enlarging_and_3d():
    weight = torch.randn(4, 3, 16, 16)
    grey = torch.rand(16, 16)
    rgb_response = torch.einsum("ij,ocij->o", grey, weight)
    one = adapt_patch_kernel(weight, 1, 16, 2)
    assert one.shape == (4, 1, 16, 16) and torch.allclose(
        torch.einsum("ij,ocij->o", grey, one), rgb_response, atol=1e-4
    )
    five = adapt_patch_kernel(weight, 5, 16, 2)
    assert five.shape == (4, 5, 16, 16) and torch.allclose(five[:, 3], weight[:, 0] * 3 / 5)
    big = adapt_patch_kernel(weight, 3, 32, 2)  # enlarging keeps the response to a constant patch
    assert big.shape == (4, 3, 32, 32) and torch.allclose(big.sum((2, 3)), weight.sum((2, 3)), rtol=1e-4, atol=1e-4)
    cube = adapt_patch_kernel(weight, 3, 8, 3)  # inflated: a volume constant in depth gets the 2D response
    flat = adapt_patch_kernel(weight, 3, 8, 2)
    plane = torch.rand(3, 8, 8)
    volume = plane[:, None].expand(3, 8, 8, 8)
    assert cube.shape == (4, 3, 8, 8, 8)
    assert torch.allclose(
        torch.einsum("cdij,ocdij->o", volume, cube), torch.einsum("cij,ocij->o", plane, flat), atol=1e-5
    )
    assert adapt_patch_kernel(weight, 3, 16, 2).data_ptr() != weight.data_ptr()


def test_3d_network_takes_2d_weights():
    net = _net(spatial_dims=3, patch_size=4, num_layers=1)
    report = load_vit_weights(net, _timm_state_dict(), "timm")
    assert report.reshaped["token_embed.proj.weight"] == "(32, 3, 16, 16) -> (32, 3, 4, 4, 4), flattened"
    assert net(torch.rand(1, 3, 4, 4, 4, 4)).shape == (1, 2, 4, 4, 4, 4)


def test_files_are_read_weights_only(tmp_path):
    sd = _timm_state_dict(depth=1)
    path = tmp_path / "vit.pth"
    torch.save({"model": sd, "epoch": 3}, path)  # nested as many training scripts save it
    assert read_state_dict(path).keys() == sd.keys()
    net = _net(num_layers=1)
    load_vit_weights(net, str(path), "timm")
    assert torch.equal(net.blocks[0].attn.qkv.weight, sd["blocks.0.attn.qkv.weight"])

    bad = tmp_path / "code.pth"
    torch.save({"blocks.0.x": datetime.date(2020, 1, 1)}, bad)  # an arbitrary pickled class: refused
    with pytest.raises(ValueError, match="code.pth"):
        read_state_dict(bad)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        read_state_dict(tmp_path / "absent.pth")
    torch.save({"epoch": 3}, tmp_path / "empty.pth")
    with pytest.raises(ValueError, match="no state dict"):
        read_state_dict(tmp_path / "empty.pth")


def test_safetensors_file(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    sd = _timm_state_dict(depth=1)
    safetensors.save_file(sd, str(tmp_path / "vit.safetensors"))
    net = _net(num_layers=1)
    load_vit_weights(net, tmp_path / "vit.safetensors", "timm")
    assert torch.equal(net.blocks[0].mlp.fc2.bias, sd["blocks.0.mlp.fc2.bias"])


@pytest.mark.parametrize(
    "net_kwargs,source,error,match",
    [
        (dict(hidden_size=64, num_heads=4), "timm", ValueError, "hidden_size=64"),
        (dict(mlp_dim=64), "timm", ValueError, "mlp_dim=64"),
        (dict(qkv_bias=False), "timm", ValueError, "qkv_bias=True"),
        ({}, "dino", ValueError, "source"),
    ],
)
def test_mismatches_are_errors(net_kwargs, source, error, match):
    with pytest.raises(error, match=match):
        load_vit_weights(_net(**net_kwargs), _timm_state_dict(), source)


def test_not_a_vit_or_not_an_shfvit():
    with pytest.raises(ValueError, match="blocks"):
        load_vit_weights(_net(), {"encoder.layer.0.weight": torch.zeros(2)}, "timm")
    with pytest.raises(TypeError, match="SHFViT"):
        load_vit_weights(torch.nn.Linear(2, 2), _timm_state_dict(), "timm")


def test_load_pretrained_is_a_no_op_without_a_path(tmp_path, caplog):
    net = _net(num_layers=1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert load_pretrained(net, "") is net and load_pretrained(net, None) is net
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    torch.save(_timm_state_dict(depth=1), tmp_path / "vit.pth")
    with caplog.at_level(logging.INFO, logger="monai_shf.networks.pretrained"):
        assert load_pretrained(net, tmp_path / "vit.pth") is net
    assert "timm weights" in caplog.text and "unused pos_embed" in caplog.text
    assert "blocks.0.attn.qkv.weight" in net.pretrained_report.loaded


def test_a_pickle_named_safetensors_names_the_file(tmp_path):
    pytest.importorskip("safetensors")
    path = tmp_path / "weights.safetensors"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="weights.safetensors' is not a safetensors file"):
        read_state_dict(path)
