"""The tile's semantic term in bands of rows: one function for every runtime, and the loop an
exported graph runs it in.

AIR's first-layer semantic term at a tile's pixel centres runs SIR's hidden layers at every pixel
and each of its 4 latent neighbours (:meth:`~sair_deploy.model.fast.FastSAIR.semantic_term_grid`).
Over a whole 512-pixel tile that is 4 x 262144 x 256 floats per layer (268 MB each): eager torch
takes it in bands of rows, and an exported graph loops over bands with ONNX ``Scan`` (ONNX
Runtime's bias, ReLU and ensemble passes ran at memory speed over the whole tile, and made its
tile graph 1.5x slower than torch's). :func:`semantic_band` is the math, :func:`add_semantic_bands`
the loop (torch's ``scan``, which ``torch.onnx`` exports as ``Scan``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import torch
from torch import Tensor

Neighbours = Tensor | Sequence[Tensor]  # stacked by neighbour, or one tensor per neighbour


def semantic_band(lat: Tensor, rows: Neighbours, cols: Neighbours, row_terms: Neighbours, col_terms: Neighbours,
                  weight: Neighbours, band: slice | Tensor, hidden: Callable[[Tensor], Tensor]) -> Tensor:
    """SIR's ensembled hidden activations at the tile rows ``band`` (a slice, or int64 indices),
    ``(B, n, H)`` in float32, one neighbour at a time (a quarter of the activations of all four
    at once).

    ``lat (B, gh, gw, C)``: SIR's precomputed first layer on the latent grid, channels last, the
    cell term added; ``rows (2, kh)``, ``cols (2, kw)``: each tile row's and column's two latent
    neighbours; ``row_terms (2, kh, C)``, ``col_terms (2, kw, C)``: the first layer's coordinate
    part, which is separable on a grid; ``weight (4, kh, kw)``: the area weights; ``hidden``: the
    ReLU and the hidden layers on rows ``(N, C) -> (N, H)``. Each of the five is indexed by
    neighbour only, so a tuple of its per-neighbour tensors serves as well.
    """
    b, c = lat.shape[0], lat.shape[-1]
    out = None
    for iy in (0, 1):
        by_row = lat.index_select(1, rows[iy][band]) + row_terms[iy][band, None]
        for ix in (0, 1):
            h = hidden((by_row.index_select(2, cols[ix]) + col_terms[ix]).reshape(-1, c))  # (B*n, H)
            # the area weights in float32 (they sum to 1), so the sum is float32 without a cast
            wk = weight[2 * iy + ix][band].reshape(-1).repeat(b).unsqueeze(-1)
            h = h.float()  # float32 operands: torch's mixed-dtype multiply-add is 3x slower
            out = h.mul_(wk) if out is None else out.addcmul_(h, wk)
    return out.view(b, -1, out.shape[-1])


EXPORT_BAND_ROWS = 8  # tile rows per band of an exported graph's semantic term (4096 centres at 512 wide)


def banded_rows(kh: int, band_rows: int = EXPORT_BAND_ROWS) -> int:
    """Rows of an exported tile's ``air_pre`` with a semantic term: its ``kh`` rows rounded up to
    whole bands."""
    return (kh + band_rows - 1) // band_rows * band_rows


def add_semantic_bands(p: Tensor, lat: Tensor, rows: Tensor, cols: Tensor, row_terms: Tensor, col_terms: Tensor,
                       weight: Tensor, hidden: Callable[[Tensor], Tensor], w_t: Tensor, band_rows: int) -> Tensor:
    """``p`` plus :func:`semantic_band`'s activations through ``w_t (H, C)`` (SIR's output layer
    folded into AIR's semantic block), a band of ``band_rows`` rows at a time, as a loop that
    exports as an ONNX ``Scan`` whose body is one band: its ensemble, then one product with the
    band of ``p`` as the addend.

    ``p (1, n, kw, C)``: the rest of AIR's first layer at the tile's pixels, laid out as rows,
    with ``n`` = :func:`banded_rows` of the tile's ``kh`` (the ``kh`` rows of ``rows``): the
    rows past ``kh`` take the last row's term and are never read. Whole bands in and out mean
    nothing is sliced, stacked or added in a pass over the tile of its own (ONNX Runtime copies
    every slice). ``hidden`` may leave out a constant vector ``c`` of its activations (the
    exported graphs' :func:`~sair_deploy.model.fast.hidden_graph`): the area weights sum to 1, so
    the result then lacks ``c @ w_t``, which the caller adds to ``p`` (in the convolution's bias).
    Returns ``(1, n, kw, C)``.
    """
    from torch._higher_order_ops.scan import scan

    _, n, kw, c = p.shape
    kh = rows.shape[1]
    n_bands = n // band_rows
    # the band's row numbers travel as floats (exact below 2^24): TensorRT's loops take float
    # inputs only
    bands = torch.arange(n, device=lat.device, dtype=torch.float32)
    bands = torch.minimum(bands, bands.new_ones(()) * (kh - 1)).reshape(n_bands, band_rows)

    # each neighbour's tensors taken apart here, once, outside the loop: a selection inside it is
    # a copy in ONNX Runtime, made again every band (a whole tile's area weights among them).
    # Copies, since a loop's inputs may not alias one another
    per_nb = [[x.clone() for x in t.unbind(0)] for t in (rows, cols, row_terms, col_terms, weight)]

    def body(carry: Tensor, band: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        index, target = band
        term = semantic_band(lat, *per_nb, index.long(), hidden).flatten(0, 1)  # a reshape: no copy
        return carry.clone(), torch.addmm(target, term.to(w_t.dtype), w_t)

    _, out = scan(body, lat.new_zeros(1), (bands, p.reshape(n_bands, band_rows * kw, c)))
    return out.reshape(p.shape)
