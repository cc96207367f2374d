"""AppEncoder (paper Tab. 4): masked RGB + mask -> appearance features at full resolution."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import AppEncoderConfig


def _norm(kind: str, ch: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    if kind == "instance":
        return nn.InstanceNorm2d(ch, track_running_stats=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


class ResBlock(nn.Module):
    """EdgeConnect/MISF residual block: dilated 3x3, norm, ReLU, 3x3, norm, plus the input."""

    def __init__(self, ch: int, dilation: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, padding=dilation, dilation=dilation), _norm(norm, ch), nn.ReLU(),
            nn.Conv2d(ch, ch, 3, padding=1), _norm(norm, ch),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class AppEncoder(nn.Module):
    """Conv7x7 -> two stride-2 convs -> res blocks -> two 3x3 convs -> two up-convs.

    Input ``(B, 4, H, W)`` with ``H, W`` multiples of 4; output ``(B, widths[0], H, W)``.
    """

    def __init__(self, cfg: AppEncoderConfig, zero_holes: bool = True):
        super().__init__()
        w0, w1, w2 = cfg.widths
        self.cfg = cfg
        self.zero_holes = zero_holes
        self.net = nn.Sequential(
            nn.Conv2d(cfg.in_channels, w0, 7, padding=3), nn.ReLU(),
            nn.Conv2d(w0, w1, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(w1, w2, 4, stride=2, padding=1), nn.ReLU(),
            *[ResBlock(w2, cfg.dilation, cfg.norm) for _ in range(cfg.res_blocks)],
            nn.Conv2d(w2, w2, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w2, w2, 3, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(w2, w1, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(w1, w0, 4, stride=2, padding=1), nn.ReLU(),
        )

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        """``image (B, 3, H, W)`` in [0, 1] (holes filled, or zeroed here), ``mask (B, 1, H, W)``
        with 1 = hole."""
        h, w = image.shape[-2:]
        # (while exporting, a tile's size is data-dependent: the runtime plans multiples of 4)
        if not torch.compiler.is_exporting() and (h % 4 or w % 4):
            raise ValueError(f"AppEncoder input {h}x{w} is not a multiple of 4")
        x = image * 2 - 1
        if self.zero_holes:
            x = x * (1 - mask)  # holes read as 0 (mid grey)
        return self.net(torch.cat([x, mask], dim=1))
