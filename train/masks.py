"""Irregular hole masks: LaMa-style thick strokes plus boxes, optionally in a hole-ratio bucket.

Masks are ``(H, W)`` float32 arrays, 1 = hole. :func:`bucket_mask` is deterministic for a given
``(seed, index)`` (evaluation draws mask ``i`` of a bucket the same way every run); the training
pipeline passes its own generator. :class:`MaskFolder` reads an existing mask set instead
(e.g. NVIDIA's irregular masks): resized with nearest neighbour, binarised.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

# Hole-ratio buckets of the paper's tables, as (low, high]: a mask belongs to a bucket when its
# hole fraction is above low and at most high.
BUCKETS: dict[str, tuple[float, float]] = {
    "0-20%": (0.0, 0.2),
    "20-40%": (0.2, 0.4),
    "40-60%": (0.4, 0.6),
}
MIN_HOLE = 0.01  # the 0-20% bucket still needs a visible hole


def _strokes(mask: np.ndarray, rng: np.random.Generator, scale: float) -> None:
    """LaMa's thick strokes: 1-5 strokes of 1-5 segments, widths and lengths scaled to the size."""
    h, w = mask.shape
    for i in range(rng.integers(1, 6)):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        for _ in range(rng.integers(1, 6)):
            angle = 0.01 + rng.uniform(0, 4.0)
            if i % 2 == 0:
                angle = 2 * np.pi - angle
            length = int((10 + rng.integers(0, 200)) * scale)
            width = max(1, int((5 + rng.integers(0, 100)) * scale))
            x2 = int(np.clip(x + length * np.sin(angle), 0, w - 1))
            y2 = int(np.clip(y + length * np.cos(angle), 0, h - 1))
            cv2.line(mask, (x, y), (x2, y2), 1.0, width)
            x, y = x2, y2


def _box(mask: np.ndarray, rng: np.random.Generator, scale: float) -> None:
    """One axis-aligned box of 30-150 px (scaled to the size)."""
    h, w = mask.shape
    bh = min(h - 1, max(2, int(rng.integers(30, 151) * scale)))
    bw = min(w - 1, max(2, int(rng.integers(30, 151) * scale)))
    y, x = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
    mask[y:y + bh, x:x + bw] = 1.0


def random_mask(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """One LaMa-style mask (strokes plus 1-3 boxes, or strokes only), no ratio constraint."""
    mask = np.zeros(size, np.float32)
    scale = min(size) / 256.0
    _strokes(mask, rng, scale)
    if rng.random() < 0.5:
        for _ in range(rng.integers(1, 4)):
            _box(mask, rng, scale)
    return mask


def mask_in_range(size: tuple[int, int], low: float, high: float, rng: np.random.Generator,
                  max_tries: int = 1000) -> np.ndarray:
    """A mask whose hole fraction is in ``(max(low, MIN_HOLE), high]``.

    Rejection sampling that grows each draw stroke group by stroke group (and box by box) until
    it reaches the bucket, and starts over when it overshoots; plain rejection of whole LaMa
    masks almost never reaches 40-60% at small sizes.
    """
    low = max(low, MIN_HOLE)
    scale = min(size) / 256.0
    for _ in range(max_tries):
        mask = np.zeros(size, np.float32)
        for _ in range(64):
            if rng.random() < 0.7:
                _strokes(mask, rng, scale)
            else:
                _box(mask, rng, scale)
            ratio = float(mask.mean())
            if ratio > high:
                break
            if ratio > low:
                return mask
    raise RuntimeError(f"could not draw a mask with hole ratio in ({low}, {high}] at {size}")


def bucket_mask(bucket: str, index: int, size: tuple[int, int] = (256, 256),
                seed: int = 0) -> np.ndarray:
    """Mask ``index`` of ``bucket`` (a key of :data:`BUCKETS`): the same for the same arguments."""
    low, high = BUCKETS[bucket]
    rng = np.random.default_rng([seed, list(BUCKETS).index(bucket), index])
    return mask_in_range(size, low, high, rng)


def training_mask(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A training mask: a bucket drawn uniformly, then a mask inside it (holes of 1-60%)."""
    low, high = list(BUCKETS.values())[int(rng.integers(0, len(BUCKETS)))]
    return mask_in_range(size, low, high, rng)


MASK_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def binarise(mask: np.ndarray, threshold: int = 127) -> np.ndarray:
    """uint8/float mask -> float32 {0, 1}; any value above ``threshold`` (of 255) is a hole."""
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m.max(axis=-1)
    if m.dtype != np.uint8:
        m = np.clip(m.astype(np.float32) * (255.0 if m.max() <= 1.0 else 1.0), 0, 255)
    return (m > threshold).astype(np.float32)


class MaskFolder:
    """An existing mask set: every image under ``root`` (recursive), white = hole."""

    def __init__(self, root: str | os.PathLike, invert: bool = False):
        self.root = Path(root)
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in MASK_SUFFIXES)
        if not self.files:
            raise FileNotFoundError(f"no mask images under {self.root}")
        self.invert = invert

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int, size: tuple[int, int]) -> np.ndarray:
        """Mask ``index`` (modulo the set size) resized to ``size`` (nearest) and binarised."""
        with Image.open(self.files[index % len(self.files)]) as im:
            im = im.convert("L").resize((size[1], size[0]), Image.Resampling.NEAREST)
            mask = binarise(np.asarray(im))
        return 1.0 - mask if self.invert else mask

    def sample(self, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        """A random mask of the set with random flips (training)."""
        mask = self.load(int(rng.integers(0, len(self.files))), size)
        if rng.random() < 0.5:
            mask = mask[:, ::-1]
        if rng.random() < 0.5:
            mask = mask[::-1]
        return np.ascontiguousarray(mask)
