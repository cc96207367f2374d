"""Dense, text-aligned CLIP features: the ViT image tower read the MaskCLIP way.

The first ``L-1`` blocks run as usual. In the last block the q/k attention is skipped: each token
keeps its own value, ``v = out_proj(W_v ln_1(x))`` (MaskCLIP turns the value and output
projections into 1x1 convolutions); with ``keep_residual`` the block's residual and FFN follow as in
MaskCLIP, otherwise they are dropped (ClearCLIP). Then ``ln_post`` and the projection to CLIP's
joint space give ``E`` of shape ``(B, embed_dim, H/16, W/16)``, with no new parameters.
Positional embeddings are interpolated bicubically for non-native grids.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import CLIP_MEAN, CLIP_STD, SemanticConfig


class WeightsNotFound(RuntimeError):
    """The pretrained CLIP weights could not be loaded (offline, missing file, bad tag)."""


def build_visual(cfg: SemanticConfig) -> nn.Module:
    """An open_clip ``VisionTransformer`` of the configured size (QuickGELU, as OpenAI CLIP)."""
    from open_clip.transformer import QuickGELU, VisionTransformer

    return VisionTransformer(
        image_size=cfg.native_size, patch_size=cfg.patch_size, width=cfg.width,
        layers=cfg.layers, heads=cfg.heads, mlp_ratio=4.0, output_dim=cfg.embed_dim,
        act_layer=QuickGELU,
    )


def load_pretrained_visual(cfg: SemanticConfig, weights: str | None = None,
                           cache_dir: str | None = None) -> dict[str, Tensor]:
    """Resolve CLIP's image-tower weights in one place and return its state dict.

    ``weights`` is a local file (.safetensors/.bin/.pt, as open_clip accepts) or ``None`` to use
    ``cfg.pretrained`` (a tag such as ``openai``, found in the open_clip cache or downloaded when
    online). Raises :class:`WeightsNotFound` with instructions when nothing can be loaded.
    """
    import open_clip

    source = weights or cfg.pretrained
    if source is None:
        raise WeightsNotFound("no pretrained CLIP weights configured")
    try:
        model = open_clip.create_model(cfg.clip_model, pretrained=source, cache_dir=cache_dir,
                                       device="cpu")
    except Exception as exc:  # network errors, missing files and bad tags all end up here
        raise WeightsNotFound(
            f"cannot load CLIP weights {source!r} for {cfg.clip_model} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); download "
            f"open_clip_pytorch_model.bin (or the OpenAI ViT-B-16.pt) on a machine with network "
            f"access and pass it with --clip-weights PATH, or put it in the open_clip cache "
            f"(--clip-cache DIR)"
        ) from exc
    return {k: v for k, v in model.visual.state_dict().items()}


class SemanticEncoder(nn.Module):
    """Frozen CLIP image tower giving a dense grid ``E`` for any ``H, W`` divisible by 16."""

    def __init__(self, cfg: SemanticConfig):
        super().__init__()
        self.cfg = cfg
        self.visual = build_visual(cfg)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)

    def train(self, mode: bool = True) -> "SemanticEncoder":
        return super().train(False)  # frozen: always in inference mode

    def positional_embedding(self, gh: int, gw: int) -> Tensor:
        """CLS + patch positional embeddings for a ``gh x gw`` grid (bicubic when not native)."""
        pos = self.visual.positional_embedding
        n = self.cfg.native_grid
        if (gh, gw) == (n, n):
            return pos
        grid = pos[1:].reshape(1, n, n, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
        return torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(gh * gw, -1)], dim=0)

    def forward(self, image: Tensor) -> Tensor:
        """``image (B, 3, H, W)`` in [0, 1], ``H, W`` multiples of the patch size -> ``E``."""
        v = self.visual
        ps = self.cfg.patch_size
        b, _, h, w = image.shape
        if h % ps or w % ps:
            raise ValueError(f"semantic input {h}x{w} is not a multiple of {ps}")
        gh, gw = h // ps, w // ps
        x = v.conv1((image - self.mean) / self.std)
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(b, 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding(gh, gw).to(x.dtype)
        x = v.ln_pre(x)
        blocks = v.transformer.resblocks
        for blk in blocks[:-1]:
            x = blk(x)
        x = self.dense_last_block(blocks[-1], x)
        x = v.ln_post(x) @ v.proj
        return x[:, 1:].transpose(1, 2).reshape(b, -1, gh, gw)

    def dense_last_block(self, blk: nn.Module, x: Tensor) -> Tensor:
        """The MaskCLIP last block: value path only, no q/k attention."""
        attn = blk.attn
        d = x.shape[-1]
        v = F.linear(blk.ln_1(x), attn.in_proj_weight[2 * d:], attn.in_proj_bias[2 * d:])
        v = attn.out_proj(v)
        if not self.cfg.keep_residual:
            return v
        x = x + blk.ls_1(v)
        return x + blk.ls_2(blk.mlp(blk.ln_2(x)))
