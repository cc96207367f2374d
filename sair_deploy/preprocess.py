"""What the semantic encoder sees: the masked image resized so its longer side is at most
``max_side``, each side a multiple of the patch size. Numpy + Pillow, shared by the runtime and
the training data pipeline so both feed the encoder the same pixels."""

from __future__ import annotations

import numpy as np
from PIL import Image


def semantic_size(height: int, width: int, max_side: int, multiple: int = 16) -> tuple[int, int]:
    """Size of the encoder's input for an ``height x width`` image."""
    s = min(1.0, max_side / max(height, width))
    return (max(multiple, int(round(height * s / multiple)) * multiple),
            max(multiple, int(round(width * s / multiple)) * multiple))


def _resize(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if plane.shape == size:
        return plane.astype(np.float32, copy=True)
    im = Image.fromarray(plane.astype(np.float32), mode="F")
    return np.asarray(im.resize((size[1], size[0]), Image.Resampling.BILINEAR), dtype=np.float32)


def semantic_input(image: np.ndarray, mask: np.ndarray, max_side: int,
                   multiple: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """``image (H, W, 3)`` float in [0, 1] and ``mask (H, W)`` (1 = hole) ->
    ``sem_image (3, h, w)`` with holes black and ``sem_valid (1, h, w)``, the known fraction."""
    size = semantic_size(image.shape[0], image.shape[1], max_side, multiple)
    valid = 1.0 - mask.astype(np.float32)
    sem_image = np.stack([_resize(image[..., c] * valid, size) for c in range(3)])
    sem_valid = _resize(valid, size)[None]
    return np.clip(sem_image, 0, 1), np.clip(sem_valid, 0, 1)
