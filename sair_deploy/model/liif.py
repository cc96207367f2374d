"""LIIF's local ensemble, written once: neighbours, relative coordinates, cells and area weights.

Conventions (yinboc/liif): a grid of ``h x w`` latents has its pixel centres at
``-1 + (2i + 1) / h`` in ``[-1, 1]``; ``coord[..., 0]`` is the row. A query ``x`` is answered by
the four latents around it; the prediction from latent ``q`` is weighted by the area of the
rectangle between ``x`` and the *diagonally opposite* latent, which is bilinear interpolation.
Neighbours are found with integer indices and gathers, never ``grid_sample``, so that every
runtime (ONNX Runtime, TensorRT) computes the same indices.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import BASES  # noqa: F401  (re-exported: the kinds sample_base takes)

_SHIFT_EPS = 1e-6  # LIIF's eps_shift: ties between two latents go to the upper/left one
_AREA_EPS = 1e-9


class Neighbours(NamedTuple):
    """The four latents around each query (last-but-one axis of size 4, LIIF's order)."""

    row: Tensor  # (..., Q, 4) int64 row index of the latent
    col: Tensor  # (..., Q, 4) int64 column index
    centre: Tensor  # (..., Q, 4, 2) coordinate of the latent's centre
    rel_coord: Tensor  # (..., Q, 4, 2) (x - x_q) scaled by (h, w) as LIIF does: a cell spans 2
    weight: Tensor  # (..., Q, 4) area weights, summing to 1


def on_device(t: Tensor, like: Tensor) -> Tensor:
    """A small host tensor ``t`` on ``like``'s device without making the host wait: a copy from
    pageable memory waits for the GPU's queue to drain, so one per graph call would stall the host
    at every call instead of letting it queue the next. From pinned memory (torch's caching host
    allocator, cheap after the first call) the copy is queued like a kernel."""
    if like.is_cuda and not torch.compiler.is_exporting():
        t = t.pin_memory()
    return t.to(like.device, non_blocking=True)


def grid_size(size: Sequence[int] | Tensor, like: Tensor) -> Tensor:
    """``(h, w)`` as a float tensor on ``like``'s device (accepts ints or a tensor)."""
    if isinstance(size, Tensor):
        return size.to(device=like.device, dtype=like.dtype)
    if all(type(s) is int for s in size):
        return on_device(torch.tensor([float(size[0]), float(size[1])], dtype=like.dtype), like)
    # symbolic sizes (torch.export tracing a dynamic shape): build the tensor from the symbols so
    # the exported graph reads the size at run time instead of baking in the sample's
    one = like.new_ones(())
    return torch.stack([one * s for s in size])


def pixel_centres(n: Tensor, start, count) -> Tensor:
    """Centres of pixels ``start..start+count-1`` of an ``n``-pixel axis, in [-1, 1] (float32).

    The in-graph twin of :func:`sair_deploy.coords.centres_1d`: the graphs make their query
    coordinates from these few integers instead of receiving coordinate arrays."""
    i = torch.arange(count, device=n.device).to(torch.float32) + start
    return -1.0 + (2.0 * i + 1.0) / n


def local_neighbours(coord: Tensor, size: Sequence[int] | Tensor) -> Neighbours:
    """Find the 4 latents of an ``h x w`` grid around each coordinate, with LIIF's weights.

    ``coord`` has shape ``(..., Q, 2)``; ``size`` is ``(h, w)``.
    """
    hw = grid_size(size, coord)
    half = 1.0 / hw  # half a latent cell, in [-1, 1] units
    rows, cols, centres, rels, areas = [], [], [], [], []
    for vy in (-1.0, 1.0):
        for vx in (-1.0, 1.0):
            shift = torch.stack([vy * half[0], vx * half[1]]) + _SHIFT_EPS
            # The neighbour as if the grid went on past the border; the latent actually read is
            # the nearest one inside (LIIF's clamp). Areas use the unclamped geometry, so the
            # weights stay bilinear (with border replication) right up to the image edge.
            ij_free = torch.floor((coord + shift + 1) * hw / 2)
            ij = torch.minimum(ij_free.clamp_min(0), hw - 1)
            centre = -1 + (2 * ij + 1) / hw
            rel_free = (coord - (-1 + (2 * ij_free + 1) / hw)) * hw
            rows.append(ij[..., 0])
            cols.append(ij[..., 1])
            centres.append(centre)
            rels.append((coord - centre) * hw)
            areas.append((rel_free[..., 0] * rel_free[..., 1]).abs() + _AREA_EPS)
    area = torch.stack(areas[::-1], dim=-1)  # swap 0<->3 and 1<->2: the diagonal opposite
    return Neighbours(
        row=torch.stack(rows, dim=-1).long(),
        col=torch.stack(cols, dim=-1).long(),
        centre=torch.stack(centres, dim=-2),
        rel_coord=torch.stack(rels, dim=-2),
        weight=area / area.sum(dim=-1, keepdim=True),
    )


class GridNeighbours(NamedTuple):
    """:func:`local_neighbours` of every centre of a grid ``ys x xs``, kept per axis where it is
    separable (a latent's row and the row part of ``rel_coord`` depend on the centre's row only).
    Index 0 of an axis is the neighbour above/left (LIIF's ``v = -1``), 1 below/right; the
    neighbour ``(iy, ix)`` is ``local_neighbours``'s ``2 * iy + ix``."""

    rows: Tensor  # (2, kh) int64 latent row of each centre row's two neighbours
    cols: Tensor  # (2, kw) int64
    rel_rows: Tensor  # (2, kh) rel_coord[..., 0]
    rel_cols: Tensor  # (2, kw) rel_coord[..., 1]
    weight: Tensor  # (4, kh*kw) area weights (row-major centres), summing to 1 over the 4


def _axis_neighbours(c: Tensor, n: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One axis of :func:`local_neighbours` (the same float operations, so the same numbers):
    latent index, relative coordinate and unclamped relative coordinate, each ``(2, L)``."""
    half = 1.0 / n
    idx, rel, free = [], [], []
    for v in (-1.0, 1.0):
        ij_free = torch.floor((c + (v * half + _SHIFT_EPS) + 1) * n / 2)
        ij = torch.minimum(ij_free.clamp_min(0), n - 1)
        idx.append(ij.long())
        rel.append((c - (-1 + (2 * ij + 1) / n)) * n)
        free.append((c - (-1 + (2 * ij_free + 1) / n)) * n)
    return torch.stack(idx), torch.stack(rel), torch.stack(free)


def grid_neighbours(ys: Tensor, xs: Tensor, size: Sequence[int] | Tensor) -> GridNeighbours:
    """:func:`local_neighbours` for the centres ``ys (kh,) x xs (kw,)``, separable: a tile's 4
    neighbours are 1-D gathers of the latent grid, not a gather with an index per centre (and,
    exported, per channel: an ``Expand`` of gigabytes per tile at the paper's widths)."""
    hw = grid_size(size, ys)
    rows, rel_y, free_y = _axis_neighbours(ys, hw[0])
    cols, rel_x, free_x = _axis_neighbours(xs, hw[1])
    area = torch.stack([(free_y[iy][:, None] * free_x[ix][None, :]).abs() + _AREA_EPS
                        for iy in (0, 1) for ix in (0, 1)])
    area = area.flip(0).flatten(1)  # the diagonally opposite rectangle
    return GridNeighbours(rows, cols, rel_y, rel_x, area / area.sum(dim=0, keepdim=True))


def scale_cell(cell: Tensor, size: Sequence[int] | Tensor) -> Tensor:
    """A cell (the query pixel's size in [-1, 1] units) scaled by the grid size, as LIIF does."""
    return cell * grid_size(size, cell)


def unfold3x3(feat: Tensor) -> Tensor:
    """LIIF's feat_unfold: each latent becomes the concatenation of its 3x3 neighbourhood."""
    b, c, h, w = feat.shape
    return F.unfold(feat, 3, padding=1).view(b, c * 9, h, w)


def gather_channels(feat: Tensor, row: Tensor, col: Tensor, channels: int | None = None) -> Tensor:
    """Gather ``feat[b, :channels, row, col]`` for index tensors of shape ``(B, ...)``, channels
    first: ``(B, channels, ...)`` (default: every channel).

    The channels-first read (training, the literal formulation); the runtime's blocks are rows
    (channels last) and are read a row per neighbour instead. ``channels`` takes the leading
    channels without slicing ``feat`` first.
    """
    b, c_all, h, w = feat.shape
    c = c_all if channels is None else channels
    idx = (row * w + col).reshape(b, 1, -1)
    out = torch.gather(feat.reshape(b, c_all, h * w), 2, idx.expand(b, c, idx.shape[-1]))
    return out.view(b, c, *row.shape[1:])


def rows_gather(table: Tensor, first: int, count: int) -> Callable[[Tensor, Tensor], Tensor]:
    """A reader of channels ``first..first+count-1`` of a block laid out as rows, ``table (1, h,
    w, C)``: ``gather(row, col)`` -> ``(*row.shape, count)`` for broadcastable int64 ``row, col``.

    It reads those scalars only (one gather over the flattened block): the exported graphs take
    a residual's 3 base channels this way from the end of every row, where slicing them out
    first would read the whole block in every call."""
    _, _, w, c = table.shape
    flat = table.reshape(-1)
    offsets = torch.arange(count, device=table.device) + first

    def gather(row: Tensor, col: Tensor) -> Tensor:
        idx = ((row * w + col) * c).unsqueeze(-1) + offsets
        return flat.index_select(0, idx.reshape(-1)).reshape(idx.shape)

    return gather


def gather_latents(feat: Tensor, row: Tensor, col: Tensor) -> Tensor:
    """Gather ``feat[b, :, row, col]`` for index tensors of shape ``(B, ...)``: ``(B, ..., C)``."""
    return gather_channels(feat, row, col).movedim(1, -1)


def ensemble(pred: Tensor, weight: Tensor) -> Tensor:
    """Weighted sum over the neighbours: ``pred (..., n, C)``, ``weight (..., n)`` -> ``(..., C)``.

    A batched product rather than multiply-then-sum: no ``(..., n, C)`` temporary."""
    return (weight.unsqueeze(-2).to(pred.dtype) @ pred).squeeze(-2)


_CUBIC_A = -0.5  # Keys' cubic convolution with a = -0.5 (Catmull-Rom), as Pillow's BICUBIC


def _cubic(d: Tensor) -> Tensor:
    """Keys' cubic kernel at distances ``d >= 0``."""
    a = _CUBIC_A
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return torch.where(d <= 1, near, torch.where(d < 2, far, torch.zeros_like(d)))


def _lanczos3(d: Tensor) -> Tensor:
    """The Lanczos kernel with 3 lobes, ``sinc(d) sinc(d/3)``, at distances ``d >= 0``."""
    x = torch.pi * d.clamp_min(1e-6)
    w = 3 * torch.sin(x) * torch.sin(x / 3) / (x * x)
    return torch.where(d < 3, w, torch.zeros_like(d))


# name -> (taps each side, kernel): the resampling filters a residual's base can be read with
_FILTERS = {"bicubic": (2, _cubic), "lanczos": (3, _lanczos3)}


def _filter_taps(c: Tensor, n: Tensor, kind: str) -> tuple[Tensor, Tensor]:
    """One axis of :func:`filter_neighbours`: the pixels of an ``n``-pixel axis that filter
    ``kind`` reads around each coordinate ``c`` (any shape, broadcast against ``n``), clamped,
    and their weights normalised to sum to 1: ``idx, weight (*c.shape, 2*taps)``."""
    taps, kernel = _FILTERS[kind]
    p = (c + 1) * n / 2 - 0.5  # continuous position in pixels, centres on integers
    f = torch.floor(p)
    t = p - f
    idx = torch.stack([torch.minimum((f + k).clamp_min(0), n - 1) for k in range(1 - taps, taps + 1)], dim=-1)
    wts = torch.stack([kernel((t - k).abs()) for k in range(1 - taps, taps + 1)], dim=-1)
    return idx.long(), wts / wts.sum(dim=-1, keepdim=True)


def filter_neighbours(coord: Tensor, size: Sequence[int] | Tensor,
                      kind: str = "bicubic") -> tuple[Tensor, Tensor, Tensor]:
    """The pixels of an ``h x w`` grid that filter ``kind`` reads around each coordinate, with
    their weights: 4x4 for bicubic, 6x6 for Lanczos-3 (Pillow's filters when upsampling).

    ``coord (..., Q, 2)`` -> ``row, col (..., Q, n)`` int64 (clamped: the border is replicated)
    and ``weight (..., Q, n)`` (normalised to sum to 1, as Pillow does). At a pixel centre the
    weights pick that pixel.
    """
    idx, wts = _filter_taps(coord, grid_size(size, coord), kind)  # (..., Q, 2, n)
    n = idx.shape[-1]
    row = idx[..., 0, :, None].expand(*idx.shape[:-2], n, n)
    col = idx[..., 1, None, :].expand(*idx.shape[:-2], n, n)
    weight = wts[..., 0, :, None] * wts[..., 1, None, :]
    flat = lambda x: x.reshape(*x.shape[:-2], n * n)  # noqa: E731
    return flat(row), flat(col), flat(weight)


def sample_base(base: Tensor | Callable[[Tensor, Tensor], Tensor], coord: Tensor, kind: str,
                origin: Tensor | None = None, size: Sequence[int] | Tensor | None = None) -> Tensor:
    """The base colours ``base (B, 3, h, w)`` interpolated at ``coord (B, Q, 2)``: ``kind`` is
    ``"bilinear"`` (the local ensemble's weights), ``"bicubic"`` or ``"lanczos"``. ``size``/``origin``: the
    full grid's size and where ``base``'s first pixel lies in it (a tile), default the base itself.
    ``base`` may also be a reader of a batch-1 block's colours (:func:`rows_gather`); give ``size``.
    """
    size = base.shape[-2:] if size is None else size
    if kind in _FILTERS:
        row, col, weight = filter_neighbours(coord, size, kind)
    else:
        nb = local_neighbours(coord, size)
        row, col, weight = nb.row, nb.col, nb.weight
    if origin is not None:
        row, col = row - origin[0], col - origin[1]
    return ensemble(base(row, col) if callable(base) else gather_latents(base, row, col), weight)


def sample_base_grid(base: Tensor | Callable[[Tensor, Tensor], Tensor], ys: Tensor, xs: Tensor, kind: str,
                     origin: Tensor | None = None, size: Sequence[int] | Tensor | None = None) -> Tensor:
    """:func:`sample_base` at the centres of the grid ``ys (kh,) x xs (kw,)`` (row-major): ``(B,
    kh*kw, 3)``. Every filter is separable, so a grid is filtered along its rows, then its
    columns: a few 1-D gathers of the block instead of a gather per query and tap (36 for
    Lanczos-3), the same sum in another order. A reader ``base`` (:func:`rows_gather`, batch 1)
    reads each tap's colours at the grid's points: 3 scalars per point and tap."""
    size = base.shape[-2:] if size is None else size
    ry, rx, wy, wx, area = _grid_taps(ys, xs, kind, origin, size)
    if callable(base):
        vals = base(ry[:, :, None, None], rx[None, None, :, :])  # (kh, a, kw, b, 3)
        if area is not None:  # bilinear: the four neighbours' area weights
            weight = area.reshape(2, 2, ys.shape[0], xs.shape[0]).permute(2, 0, 3, 1)  # (kh, iy, kw, ix)
            out = (vals * weight.unsqueeze(-1)).sum(dim=(1, 3))
        else:
            out = ((vals * wx[None, None, :, :, None]).sum(3) * wy[:, :, None, None]).sum(1)
        return out.reshape(1, -1, 3)
    if area is not None:
        out = None
        for iy in (0, 1):
            by_row = base.index_select(2, ry[:, iy])  # each neighbour row's block rows, once
            for ix in (0, 1):
                term = by_row.index_select(3, rx[:, ix]).flatten(2) * area[2 * iy + ix]
                out = term if out is None else out + term
        return out.transpose(1, 2)
    rows = None
    for a in range(ry.shape[1]):
        term = base.index_select(2, ry[:, a]) * wy[:, a, None]
        rows = term if rows is None else rows + term
    out = None
    for b in range(rx.shape[1]):
        term = rows.index_select(3, rx[:, b]) * wx[:, b]
        out = term if out is None else out + term
    return out.flatten(2).transpose(1, 2)


def _grid_taps(ys: Tensor, xs: Tensor, kind: str, origin: Tensor | None, size: Sequence[int] | Tensor):
    """The block pixels :func:`sample_base_grid` reads per grid row and column, ``ry (kh, a)``,
    ``rx (kw, b)`` (``origin`` taken off), with a filter's per-axis weights ``wy, wx``; for
    bilinear, LIIF's area weights ``(4, kh*kw)`` instead (the last item; None for a filter)."""
    if kind not in _FILTERS:
        nb = grid_neighbours(ys, xs, size)
        ry, rx, wy, wx, area = nb.rows.t(), nb.cols.t(), None, None, nb.weight
    else:
        hw = grid_size(size, ys)
        (ry, wy), (rx, wx) = _filter_taps(ys, hw[0], kind), _filter_taps(xs, hw[1], kind)
        area = None
    if origin is not None:
        ry, rx = ry - origin[0], rx - origin[1]
    return ry, rx, wy, wx, area
