"""AppEncoder (paper Tab. 4): masked RGB + mask -> appearance features at full resolution."""

from __future__ import annotations

import copy

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
        x = torch.cat([x, mask], dim=1)
        if image.is_contiguous(memory_format=torch.channels_last) and not image.is_contiguous():
            # the caller asked for channels last (the runtime on a CPU or GPU: oneDNN's and
            # cuDNN's convolutions run without reordering their input and output); cat forgets it
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)


def fold_batchnorm(encoder: AppEncoder) -> AppEncoder:
    """A copy of an AppEncoder in eval mode with each BatchNorm folded into the convolution before
    it (the same affine map, ``W * s`` and ``(b - mean) * s + beta`` with ``s = gamma / std``):
    inference without the norms' passes over the features, and under bfloat16 autocast without
    the casts around each of them (norms run in float32 there). Other norms are kept as they are.
    """
    folded = copy.deepcopy(encoder).eval()
    for block in folded.net:
        if not isinstance(block, ResBlock):
            continue
        body = block.body
        for i in range(len(body) - 1):
            conv, norm = body[i], body[i + 1]
            if not (isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)):
                continue
            with torch.no_grad():
                scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
                conv.weight.mul_(scale[:, None, None, None])
                bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
                conv.bias = nn.Parameter((bias - norm.running_mean) * scale + norm.bias)
            body[i + 1] = nn.Identity()
    return folded


class PhaseConvTranspose(nn.Module):
    """A ``ConvTranspose2d(kernel 4, stride 2, padding 1)`` as one convolution: each of the four
    output phases (even/odd row, even/odd column) is a 2x2 convolution of the input, so one 2x2
    convolution with 4x the output channels, padded by 1, computes them all; its outputs are then
    cut to size and interleaved. The same sums, for exported graphs: ONNX Runtime runs
    convolutions in its blocked kernels, and its ``ConvTranspose`` took 2x as long here."""

    def __init__(self, deconv: nn.ConvTranspose2d):
        super().__init__()
        if (deconv.kernel_size, deconv.stride, deconv.padding, deconv.groups, deconv.dilation,
                deconv.output_padding) != ((4, 4), (2, 2), (1, 1), 1, (1, 1), (0, 0)):
            raise ValueError("PhaseConvTranspose takes a kernel-4, stride-2, padding-1 ConvTranspose2d")
        w = deconv.weight.detach()  # (in, out, 4, 4)
        taps = ((3, 1), (2, 0))  # kernel rows (cols) read by even (odd) outputs, top (left) first
        phases = [w[:, :, list(taps[a])][..., list(taps[b])].transpose(0, 1) for a in (0, 1) for b in (0, 1)]
        self.register_buffer("weight", torch.cat(phases))  # (4*out, in, 2, 2), phase-major
        bias = deconv.bias.detach() if deconv.bias is not None else torch.zeros(w.shape[1])
        self.register_buffer("bias", bias.repeat(4))

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        y = torch.nn.functional.conv2d(x, self.weight, self.bias, padding=1)  # (B, 4*out, h+1, w+1)
        y = y.view(b, 2, 2, -1, h + 1, w + 1)
        # phase (a, b) reads the windows starting a rows and b columns further down the padding
        y = torch.stack([torch.stack([y[:, a, c, :, a:a + h, c:c + w] for c in (0, 1)], dim=-1)
                         for a in (0, 1)], dim=3)  # (B, out, h, 2, w, 2)
        return y.reshape(b, -1, 2 * h, 2 * w)


def for_export(encoder: AppEncoder) -> AppEncoder:
    """A copy of an AppEncoder in eval mode with its transposed convolutions as
    :class:`PhaseConvTranspose`: what the exported graphs run (the same function)."""
    copied = copy.deepcopy(encoder).eval()
    for i, m in enumerate(copied.net):
        if isinstance(m, nn.ConvTranspose2d):
            copied.net[i] = PhaseConvTranspose(m)
    return copied

