"""Plans for tiled work, in numpy: overlapping AppEncoder tiles with blend weights, and the
blocks that the query phase walks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tile:
    """An AppEncoder tile: run on ``inner`` (core plus context), keep ``window`` with ``weight``."""

    core: tuple[int, int, int, int]  # r0, r1, c0, c1: tiles' cores partition the image
    window: tuple[int, int, int, int]  # core grown by the blend band, clipped to the image
    inner: tuple[int, int, int, int]  # core grown by the full overlap, clipped: what the encoder sees


def _starts(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """Cores of ``tile x tile`` pixels; each tile sees ``overlap`` pixels of context on every
    side, and its output is blended over a band of ``overlap // 2`` pixels around its core."""
    band = overlap // 2
    tiles = []
    for r0, r1 in _starts(height, tile):
        for c0, c1 in _starts(width, tile):
            grow = lambda m: (max(r0 - m, 0), min(r1 + m, height), max(c0 - m, 0), min(c1 + m, width))  # noqa: E731
            tiles.append(Tile((r0, r1, c0, c1), grow(band), grow(overlap)))
    return tiles


def blend_weight(t: Tile, height: int, width: int) -> np.ndarray:
    """Weights over ``t.window``: 1 inside, linear ramps across bands shared with neighbours.

    In a band shared by two tiles the two ramps sum to 1, so blended features change smoothly
    from one tile to the next; at the image border there is no ramp.
    """
    r0, r1, c0, c1 = t.window
    cr0, cr1, cc0, cc1 = t.core

    def ramp(a: int, b: int, ca: int, cb: int, n: int) -> np.ndarray:
        p = np.arange(a, b, dtype=np.float32) + 0.5
        w = np.ones(b - a, dtype=np.float32)
        if a > 0 and ca > a:
            w = np.minimum(w, (p - a) / (2 * (ca - a)))
        if b < n and b > cb:
            w = np.minimum(w, (b - p) / (2 * (b - cb)))
        return np.clip(w, 1e-6, 1.0)

    return np.outer(ramp(r0, r1, cr0, cr1, height), ramp(c0, c1, cc0, cc1, width))


def plan_blocks(height: int, width: int, block: int) -> list[tuple[int, int, int, int]]:
    """Blocks ``(r0, r1, c0, c1)`` of input pixels that partition the image (query phase)."""
    return [(r0, r1, c0, c1) for r0, r1 in _starts(height, block) for c0, c1 in _starts(width, block)]


def pad_to_multiple(arr: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Symmetric-pad the last two axes up to a multiple; returns the array and the padding added."""
    h, w = arr.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return arr, (0, 0)
    widths = [(0, 0)] * (arr.ndim - 2) + [(0, ph), (0, pw)]
    return np.pad(arr, widths, mode="symmetric"), (ph, pw)
