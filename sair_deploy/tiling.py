"""Plans for tiled work, in numpy: the region an inpaint call works on, its tiles, and where each
tile's answers go. Only integers come out of here; the graphs do the work."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .coords import output_span


@dataclass(frozen=True)
class RuntimePlan:
    """The runtime's sizes, in one place: read by :class:`~sair_deploy.inpainter.Inpainter`, by
    the exporter (TensorRT optimisation profiles cover them) and recorded in the manifest."""

    tile: int = 512  # AppEncoder tile cores (pixels)
    chunk: int = 1 << 20  # largest query call on a GPU (a 512-pixel tile at scale 2)
    margin: int = 3  # pixels around a core that a query reads (Lanczos-3 bases read 3)
    max_side: int = 16384  # largest region side the TensorRT profiles accept (prepare, fill)

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Tile:
    """A tile of a region: its ``core`` (cores partition the region), the ``inner`` window the
    AppEncoder sees (core plus context, clipped; ends at the padded size on the last row/col) and
    the ``keep`` window whose precompute its queries read (core plus the query margin)."""

    core: tuple[int, int, int, int]  # r0, r1, c0, c1 in region pixels
    inner: tuple[int, int, int, int]
    keep: tuple[int, int, int, int]


def _starts(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def padded(n: int) -> int:
    """``n`` rounded up to the AppEncoder's stride (4): the prepare graph pads to this."""
    return n + (-n) % 4


def plan_tiles(height: int, width: int, tile: int, overlap: int, margin: int) -> list[list[Tile]]:
    """Tiles of a ``height x width`` region as rows of tiles: cores of ``tile x tile`` pixels,
    ``overlap`` pixels of encoder context each side and ``margin`` pixels kept each side."""
    rows = []
    for r0, r1 in _starts(height, tile):
        row = []
        for c0, c1 in _starts(width, tile):
            ir1 = r1 + overlap if r1 + overlap < height else padded(height)
            ic1 = c1 + overlap if c1 + overlap < width else padded(width)
            inner = (max(r0 - overlap, 0), ir1, max(c0 - overlap, 0), ic1)
            keep = (max(r0 - margin, 0), min(r1 + margin, height), max(c0 - margin, 0), min(c1 + margin, width))
            row.append(Tile((r0, r1, c0, c1), inner, keep))
        rows.append(row)
    return rows


def region_around(mask: np.ndarray, context: int) -> tuple[int, int, int, int]:
    """The window of the image that scale-1 inpainting needs: the holes' bounding box grown by
    ``context`` pixels, its origin on the AppEncoder's stride (so features equal a whole-image
    pass), clipped to the image. ``(0, 0, 0, 0)`` when there is no hole."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return 0, 0, 0, 0
    cols = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    r0 = max(int(rows[0]) - context, 0) // 4 * 4
    c0 = max(int(cols[0]) - context, 0) // 4 * 4
    return r0, min(int(rows[-1]) + 1 + context, h), c0, min(int(cols[-1]) + 1 + context, w)


def output_edges(n_in: int, n_out: int, tile: int) -> list[int]:
    """Output rows (or cols) where each tile's answers start, then ``n_out``: the output pixels
    whose centres fall in a tile's core are the ones it answers."""
    return [output_span(n_in, n_out, s, e)[0] for s, e in _starts(n_in, tile)] + [n_out]


def tile_outputs(row_edges: list[int], col_edges: list[int]):
    """Per tile ``(i, j, oy0, oy1, ox0, ox1, offset)``: the output rectangle it answers and where
    its answers start in the tile-after-tile layout (the layout the assemble graph reads)."""
    out_w = col_edges[-1]
    for i in range(len(row_edges) - 1):
        oy0, oy1 = row_edges[i], row_edges[i + 1]
        for j in range(len(col_edges) - 1):
            ox0, ox1 = col_edges[j], col_edges[j + 1]
            yield i, j, oy0, oy1, ox0, ox1, oy0 * out_w + (oy1 - oy0) * ox0


def holes_by_tile(mask: np.ndarray, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """The region-flat indices of the holes, grouped tile after tile (row-major inside each),
    and where each tile's group starts (``(n_tiles + 1,)``, tiles in row-major order)."""
    h, w = mask.shape
    groups = []
    for r0 in range(0, h, tile):  # tile by tile: no sort of every hole by its tile
        for c0 in range(0, w, tile):
            rows, cols = np.nonzero(mask[r0:r0 + tile, c0:c0 + tile])
            groups.append(((rows + r0) * w + (cols + c0)).astype(np.int32))
    counts = [len(g) for g in groups]
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return (np.concatenate(groups) if groups else np.zeros(0, np.int32)), starts
