"""Classical fills of the holes, written as a few pooling/convolution/resize ops so they export to
ONNX like the rest of the model and the runtime needs no OpenCV.

The encoders see the fill instead of zeros, and AIR can predict a residual over it, so even a
small network starts from the surrounding colours.

* ``push_pull``: a masked mean pyramid; smooth, but it mixes the colours of everything around a
  large hole.
* ``onion_fill``: the same pyramid, but at every level the holes are first peeled from their
  border inwards (each ring takes the mean of its known neighbours) and only what is left takes
  the coarser level; a few relaxation steps then smooth the seams. Regions keep their own colour
  up to the hole's middle, which is what SSIM rewards and what OpenCV's inpainting does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

FILLS = ("zero", "pushpull", "onion")


def fill_holes(kind: str, image: Tensor, mask: Tensor) -> Tensor:
    """The fill named ``kind`` (one of :data:`FILLS`) of ``image`` where ``mask`` is 1."""
    if kind == "pushpull":
        return push_pull(image, mask)
    if kind == "onion":
        return onion_fill(image, mask)
    return image


def _pyramid(image: Tensor, mask: Tensor, levels: int) -> tuple[list[tuple[Tensor, Tensor]], Tensor]:
    """Push: known colours premultiplied by the known fraction, averaged down ``levels`` times.
    Returns the levels (finest first) and the coarsest level's colour."""
    valid = 1 - mask
    pyramid = []
    p, w = image * valid, valid
    for _ in range(levels):
        pyramid.append((p, w))
        p = F.avg_pool2d(p, 2, ceil_mode=True)
        w = F.avg_pool2d(w, 2, ceil_mode=True)
    return pyramid, (p + 0.5 * 1e-6) / (w + 1e-6)  # mid grey where nothing at all is known


def push_pull(image: Tensor, mask: Tensor, levels: int = 12) -> Tensor:
    """Fill ``image (B,C,H,W)`` where ``mask (B,1,H,W)`` is 1 from the known pixels around.

    Push: average the known colours (premultiplied by the known fraction) down a pyramid.
    Pull: from the coarsest level up, each level keeps its known part and takes the rest from
    the upsampled coarser level. Known pixels are returned unchanged.
    """
    pyramid, colour = _pyramid(image, mask, levels)
    for p, w in reversed(pyramid):
        up = F.interpolate(colour, size=p.shape[-2:], mode="bilinear", align_corners=False)
        colour = p + (1 - w) * up
    return colour


def _sum3x3(x: Tensor) -> Tensor:
    """Sum over each pixel's 3x3 neighbourhood (zeros outside the image)."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=True) * 9


def _cross_sum(x: Tensor) -> Tensor:
    """Sum of each pixel's 4 neighbours (zeros outside the image), by shifted slices."""
    h, w = x.shape[-2:]
    p = F.pad(x, (1, 1, 1, 1))
    return p[..., :h, 1:w + 1] + p[..., 2:, 1:w + 1] + p[..., 1:h + 1, :w] + p[..., 1:h + 1, 2:]


def onion_fill(image: Tensor, mask: Tensor, levels: int = 12, peel: int = 8,
               smooth: int = 16) -> Tensor:
    """Fill ``image (B,3,H,W)`` where ``mask (B,1,H,W)`` is 1: a multi-scale onion peel.

    From the coarsest pyramid level up: pixels with any known colour are known; ``peel`` rings
    of the unknown region next to them take the mean of their known 3x3 neighbours; the rest
    comes from the upsampled coarser level; then ``smooth`` Jacobi steps of the Laplace equation
    relax the pixels that were not fully known. Every hole pixel is filled from the nearest level
    at which it lies within ``peel`` pixels of known colour. Known pixels are returned unchanged.
    """
    pyramid, colour = _pyramid(image, mask, levels)
    for p, w in reversed(pyramid):
        up = F.interpolate(colour, size=p.shape[-2:], mode="bilinear", align_corners=False)
        known = (w > 0).to(image.dtype)
        x = p / w.clamp_min(1e-6) * known
        for _ in range(peel):
            around = _sum3x3(known)
            ring = (around > 0).to(image.dtype) * (1 - known)
            x = torch.addcmul(x, ring / around.clamp_min(1e-6), _sum3x3(x * known))
            known = known + ring
        x = x * known + up * (1 - known)
        count = _cross_sum(torch.ones_like(w))  # neighbours inside the image (0 on a 1x1 level)
        free = (w < 1).to(image.dtype) * (count > 0).to(image.dtype)  # known pixels stay
        keep, step = 1 - free, free / count.clamp_min(1)
        for _ in range(smooth):
            x = torch.addcmul(keep * x, step, _cross_sum(x))
        colour = x
    return colour
