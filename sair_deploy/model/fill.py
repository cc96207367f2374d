"""A classical fill of the holes: masked push-pull (a mean pyramid), a few pooling/resize ops.

The encoders see this smooth fill instead of zeros, and AIR can predict a residual over it, so
even a small network starts from the surrounding colours. Written with fixed-depth pooling and
resizes so it exports to ONNX like the rest of the model.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def push_pull(image: Tensor, mask: Tensor, levels: int = 12) -> Tensor:
    """Fill ``image (B,C,H,W)`` where ``mask (B,1,H,W)`` is 1 from the known pixels around.

    Push: average the known colours (premultiplied by the known fraction) down a pyramid.
    Pull: from the coarsest level up, each level keeps its known part and takes the rest from
    the upsampled coarser level. Known pixels are returned unchanged.
    """
    valid = 1 - mask
    pyramid = []
    p, w = image * valid, valid
    for _ in range(levels):
        pyramid.append((p, w))
        p = F.avg_pool2d(p, 2, ceil_mode=True)
        w = F.avg_pool2d(w, 2, ceil_mode=True)
    colour = (p + 0.5 * 1e-6) / (w + 1e-6)  # mid grey where nothing at all is known
    for p, w in reversed(pyramid):
        up = F.interpolate(colour, size=p.shape[-2:], mode="bilinear", align_corners=False)
        colour = p + (1 - w) * up
    return colour
