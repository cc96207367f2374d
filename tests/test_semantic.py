"""The MaskCLIP dense path of the CLIP image tower, on a small random ViT."""

import pytest
import torch
import torch.nn.functional as F

from sair_deploy.model.config import SemanticConfig
from sair_deploy.model.semantic import SemanticEncoder, WeightsNotFound, bicubic_weights, load_pretrained_visual

CFG = SemanticConfig(width=32, layers=3, heads=4, embed_dim=24, native_size=64, max_side=64,
                     pretrained=None)


def _encoder(**changes) -> SemanticEncoder:
    torch.manual_seed(0)
    from dataclasses import replace
    return SemanticEncoder(replace(CFG, **changes)).eval()


def _hand_written(enc: SemanticEncoder, image: torch.Tensor, keep_residual: bool) -> torch.Tensor:
    """MaskCLIP written out with explicit matrices, independently of the module's code."""
    v = enc.visual
    d = CFG.width
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    x = F.conv2d((image - mean) / std, v.conv1.weight, stride=16)
    b, _, gh, gw = x.shape
    tokens = x.reshape(b, d, gh * gw).permute(0, 2, 1)
    pos = v.positional_embedding
    n = CFG.native_size // 16
    grid = pos[1:].reshape(n, n, d).permute(2, 0, 1)[None]
    grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)[0]
    pos = torch.cat([pos[:1], grid.permute(1, 2, 0).reshape(-1, d)])
    x = torch.cat([v.class_embedding.expand(b, 1, d), tokens], 1) + pos
    x = v.ln_pre(x)
    for blk in v.transformer.resblocks[:-1]:
        x = blk(x)
    last = v.transformer.resblocks[-1]
    wv = last.attn.in_proj_weight[2 * d:]
    bv = last.attn.in_proj_bias[2 * d:]
    y = F.layer_norm(x, (d,), last.ln_1.weight, last.ln_1.bias, last.ln_1.eps)
    val = (y @ wv.T + bv) @ last.attn.out_proj.weight.T + last.attn.out_proj.bias
    if keep_residual:
        val = val + x
        val = val + last.mlp(F.layer_norm(val, (d,), last.ln_2.weight, last.ln_2.bias, last.ln_2.eps))
    out = F.layer_norm(val, (d,), v.ln_post.weight, v.ln_post.bias, v.ln_post.eps) @ v.proj
    return out[:, 1:].reshape(b, gh, gw, -1).permute(0, 3, 1, 2)


@pytest.mark.parametrize("keep_residual", [True, False])
@pytest.mark.parametrize("size", [(64, 64), (48, 80)])
def test_dense_output_equals_hand_written_v_path(keep_residual, size):
    enc = _encoder(keep_residual=keep_residual)
    image = torch.rand(2, 3, *size)
    with torch.no_grad():
        got = enc(image)
        want = _hand_written(enc, image, keep_residual)
    assert got.shape == (2, CFG.embed_dim, size[0] // 16, size[1] // 16)
    assert torch.allclose(got, want, atol=1e-5)


def test_positional_embedding_unchanged_at_native_size():
    enc = _encoder()
    n = CFG.native_size // 16
    assert torch.equal(enc.positional_embedding(n, n), enc.visual.positional_embedding)
    other = enc.positional_embedding(3, 7)
    assert other.shape == (1 + 21, CFG.width)
    assert torch.equal(other[0], enc.visual.positional_embedding[0])  # CLS kept


def test_encoder_is_frozen_and_rejects_bad_sizes():
    enc = _encoder()
    enc.train()
    assert not enc.training
    assert not any(p.requires_grad for p in enc.parameters())
    with pytest.raises(ValueError, match="multiple of 16"):
        enc(torch.rand(1, 3, 40, 64))


def test_missing_pretrained_weights_say_how_to_supply_them(tmp_path):
    with pytest.raises(WeightsNotFound, match="--clip-weights"):
        load_pretrained_visual(SemanticConfig(), weights=str(tmp_path / "missing.bin"))


@pytest.mark.parametrize("n_out", [1, 3, 4, 7, 14, 16, 31, 64])
def test_bicubic_weights_resize_as_torch_does(n_out):
    # the matrix every runtime resizes the positional grid with, against torch's own bicubic
    torch.manual_seed(0)
    axis = torch.randn(3, 14)
    want = F.interpolate(axis[None, :, None, :], size=(1, n_out), mode="bicubic", align_corners=False)[0, :, 0]
    got = axis @ bicubic_weights(14, n_out, axis).t()
    assert torch.allclose(got, want, atol=1e-5)
