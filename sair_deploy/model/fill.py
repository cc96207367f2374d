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
* ``biharmonic_fill``: a coarse-to-fine solve of the biharmonic equation (what scikit-image's
  ``inpaint_biharmonic`` solves exactly): the push-pull pyramid gives each level its initial
  guess, then damped Jacobi steps of the 13-point biharmonic stencil relax the holes. Smooth
  gradients continue into the hole instead of flattening out as a harmonic fill does.

Every repeated step runs through :func:`_repeat`: a Python loop in eager mode, one ONNX ``Loop``
node when exported (``torch.export`` would otherwise unroll thousands of nodes).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import FILLS  # noqa: F401  (re-exported: the names fill_holes takes)
from .liif import on_device


def fill_holes(kind: str, image: Tensor, mask: Tensor) -> Tensor:
    """The fill named ``kind`` (one of :data:`FILLS`) of ``image`` where ``mask`` is 1."""
    if kind == "pushpull":
        return push_pull(image, mask)
    if kind == "onion":
        return onion_fill(image, mask)
    if kind == "biharmonic":
        return biharmonic_fill(image, mask)
    return image


def _repeat(n: int, step: Callable[..., tuple[Tensor, ...]], carried: tuple[Tensor, ...],
            consts: tuple[Tensor, ...] = ()) -> tuple[Tensor, ...]:
    """``carried = step(*carried, *consts)``, ``n`` times.

    Exported, this is a ``while_loop`` (one ONNX ``Loop`` whose body is ``step``), so the graph
    holds each step once; eagerly (training, the torch runtime) it is a plain loop. ``step`` must
    be a module-level function: tensors it needs besides the carried ones go in ``consts`` (a
    closure over variables that a Python loop rebinds does not export).
    """
    if not torch.compiler.is_exporting():
        for _ in range(n):
            carried = step(*carried, *consts)
        return carried
    # The operator itself, not torch's while_loop(): that one compiles the body with dynamo
    # (seconds per loop when exporting); the operator traces the plain functions directly.
    k = len(carried)

    def cond(i: Tensor, *values: Tensor) -> Tensor:
        return i < n

    def body(i: Tensor, *values: Tensor) -> tuple[Tensor, ...]:
        return (i + 1, *step(*values[:k], *values[k:]))

    start = torch.zeros((), dtype=torch.int64, device=carried[0].device)
    out = torch.ops.higher_order.while_loop(cond, body, (start, *carried), tuple(consts))
    return tuple(out[1:])


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


def _stencil(rows: list[list[float]], like: Tensor) -> Tensor:
    """A depthwise convolution kernel ``(C, 1, k, k)`` applying ``rows`` to each channel of ``like``."""
    k = on_device(torch.tensor(rows, dtype=like.dtype), like)
    return k.expand(like.shape[1], 1, *k.shape).contiguous()


_CROSS = [[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]


def _cross_sum(x: Tensor, kernel: Tensor) -> Tensor:
    """Sum of each pixel's 4 neighbours (zeros outside the image); ``kernel = _stencil(_CROSS, x)``
    (made outside loop bodies: a constant created inside one does not export)."""
    return F.conv2d(x, kernel, padding=1, groups=x.shape[1])


def _peel_ring(x: Tensor, known: Tensor) -> tuple[Tensor, Tensor]:
    """One onion ring: unknown pixels next to known ones take the mean of those neighbours.
    ``x`` is 0 wherever ``known`` is 0, so the 3x3 sum of ``x`` is that of its known pixels."""
    around = _sum3x3(known)
    ring = (around > 0).to(x.dtype) * (1 - known)
    return torch.addcmul(x, ring / around.clamp_min(1e-6), _sum3x3(x)), known + ring


def _jacobi(x: Tensor, keep: Tensor, step: Tensor, cross: Tensor) -> tuple[Tensor]:
    """One Jacobi step of the Laplace equation where ``keep`` is 0 (``step`` = 1 / neighbours)."""
    return (torch.addcmul(keep * x, step, _cross_sum(x, cross)),)


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
        x, known = _repeat(peel, _peel_ring, (x, known))
        x = x * known + up * (1 - known)
        cross = _stencil(_CROSS, x)
        count = _cross_sum(torch.ones_like(x), cross)  # neighbours inside the image (0 on 1x1)
        free = (w < 1).to(image.dtype) * (count > 0).to(image.dtype)  # known pixels stay
        keep, step = 1 - free, free / count.clamp_min(1)
        (x,) = _repeat(smooth, _jacobi, (x,), (keep, step, cross))
        colour = x
    return colour


# The 13-point biharmonic stencil (the 5-point Laplacian applied twice), centre 20.
_BIHARMONIC = [[0.0, 0.0, 1.0, 0.0, 0.0],
               [0.0, 2.0, -8.0, 2.0, 0.0],
               [1.0, -8.0, 20.0, -8.0, 1.0],
               [0.0, 2.0, -8.0, 2.0, 0.0],
               [0.0, 0.0, 1.0, 0.0, 0.0]]


def _biharmonic_step(x: Tensor, rate: Tensor, kernel: Tensor) -> tuple[Tensor]:
    """One damped Jacobi step ``x -= rate * lap^2 x``, the border replicated."""
    lap2 = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), kernel, groups=x.shape[1])
    return (x - rate * lap2,)


def biharmonic_fill(image: Tensor, mask: Tensor, levels: int = 12, steps: int = 24,
                    omega: float = 0.5) -> Tensor:
    """Fill ``image (B,C,H,W)`` where ``mask (B,1,H,W)`` is 1 by a coarse-to-fine biharmonic solve.

    From the coarsest pyramid level up, each level starts from push-pull (its known part plus the
    upsampled coarser solution), then ``steps`` damped Jacobi steps ``x -= omega/20 * lap^2 x``
    relax every pixel that is not fully known (``omega < 0.625`` keeps the iteration stable: the
    stencil's largest eigenvalue is 64). The image border is mirrored by edge replication (a
    Neumann-like condition). Known pixels are returned unchanged.
    """
    pyramid, colour = _pyramid(image, mask, levels)
    for p, w in reversed(pyramid):
        up = F.interpolate(colour, size=p.shape[-2:], mode="bilinear", align_corners=False)
        x = p + (1 - w) * up
        rate = (w < 1).to(image.dtype) * (omega / 20)
        (colour,) = _repeat(steps, _biharmonic_step, (x,), (rate, _stencil(_BIHARMONIC, x)))
    return colour
