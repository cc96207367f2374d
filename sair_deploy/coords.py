"""Coordinate grids in numpy: pixel centres, output grids and cells (LIIF's conventions).

Pure numpy so the torch-free runtime, the training data pipeline and the torch model share it.
"""

from __future__ import annotations

import numpy as np


def centres_1d(n: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Centres of pixels ``start..stop-1`` of an ``n``-pixel axis, in [-1, 1]."""
    stop = n if stop is None else stop
    return (-1.0 + (2.0 * np.arange(start, stop, dtype=np.float64) + 1.0) / n).astype(np.float32)


def make_coord(shape: tuple[int, int], rows: tuple[int, int] | None = None,
               cols: tuple[int, int] | None = None) -> np.ndarray:
    """Pixel-centre coordinates of an ``h x w`` grid (or a window of it) as ``(N, 2)`` float32.

    ``coord[:, 0]`` is the row, ``coord[:, 1]`` the column; rows vary slowest.
    """
    h, w = shape
    r0, r1 = rows if rows is not None else (0, h)
    c0, c1 = cols if cols is not None else (0, w)
    ys = centres_1d(h, r0, r1)
    xs = centres_1d(w, c0, c1)
    grid = np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1)
    return grid.reshape(-1, 2)


def cell_for(out_shape: tuple[int, int]) -> np.ndarray:
    """The cell of an output grid: one output pixel's size in [-1, 1] units, shape ``(1, 2)``."""
    return np.array([[2.0 / out_shape[0], 2.0 / out_shape[1]]], dtype=np.float32)


def output_shape(in_shape: tuple[int, int], scale: float) -> tuple[int, int]:
    """``round(S*H) x round(S*W)``."""
    return int(round(in_shape[0] * scale)), int(round(in_shape[1] * scale))


def output_span(n_in: int, n_out: int, start: int, stop: int) -> tuple[int, int]:
    """Output indices whose centres fall in input pixels ``[start, stop)`` of the same axis.

    Output pixel ``o`` has its centre at input position ``(o + 0.5) * n_in / n_out``.
    """
    lo = int(np.ceil(start * n_out / n_in - 0.5))
    hi = int(np.ceil(stop * n_out / n_in - 0.5))
    return max(lo, 0), min(hi, n_out)
