"""The tile's semantic term in bands of rows: one function for every runtime, and the loop an
exported graph runs it in.

AIR's first-layer semantic term at a tile's pixel centres runs SIR's hidden layers at every pixel
and each of its 4 latent neighbours (:meth:`~sair_deploy.model.fast.FastSAIR.semantic_term_grid`).
Over a whole 512-pixel tile that is 4 x 262144 x 256 floats per layer (268 MB each): eager torch
takes it in bands of rows, and an exported graph loops over bands with ONNX ``Scan`` (ONNX
Runtime's bias, ReLU and ensemble passes ran at memory speed over the whole tile, and made its
tile graph 1.5x slower than torch's). :func:`semantic_band` is the math, :func:`semantic_bands`
the loop (torch's ``scan``, which ``torch.onnx`` exports as ``Scan``).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def semantic_band(lat: Tensor, rows: Tensor, cols: Tensor, row_terms: Tensor, col_terms: Tensor,
                  weight: Tensor, band: slice | Tensor, hidden: Callable[[Tensor], Tensor]) -> Tensor:
    """SIR's ensembled hidden activations at the tile rows ``band`` (a slice, or int64 indices),
    ``(B, n, H)`` in float32, one neighbour at a time (a quarter of the activations of all four
    at once).

    ``lat (B, gh, gw, C)``: SIR's precomputed first layer on the latent grid, channels last, the
    cell term added; ``rows (2, kh)``, ``cols (2, kw)``: each tile row's and column's two latent
    neighbours; ``row_terms (2, kh, C)``, ``col_terms (2, kw, C)``: the first layer's coordinate
    part, which is separable on a grid; ``weight (4, kh, kw)``: the area weights; ``hidden``: the
    ReLU and the hidden layers on rows ``(N, C) -> (N, H)``.
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


def semantic_bands(lat: Tensor, rows: Tensor, cols: Tensor, row_terms: Tensor, col_terms: Tensor,
                   weight: Tensor, hidden: Callable[[Tensor], Tensor], band_rows: int) -> Tensor:
    """:func:`semantic_band` over all ``kh`` tile rows in bands of ``band_rows`` rows, as a loop
    that exports as an ONNX ``Scan`` (its body one band): ``(B, kh*kw, H)``. The last band
    repeats the last row; the repeats are cut off."""
    from torch._higher_order_ops.scan import scan

    kh = rows.shape[1]
    n_bands = (kh + band_rows - 1) // band_rows
    # the band's row numbers travel as floats (exact below 2^24): TensorRT's loops take float
    # inputs only
    bands = torch.arange(n_bands * band_rows, device=lat.device, dtype=torch.float32)
    bands = torch.minimum(bands, bands.new_ones(()) * (kh - 1)).reshape(n_bands, band_rows)

    def body(carry: Tensor, band: Tensor) -> tuple[Tensor, Tensor]:
        return carry.clone(), semantic_band(lat, rows, cols, row_terms, col_terms, weight, band.long(), hidden)

    _, out = scan(body, lat.new_zeros(1), bands)  # (n_bands, B, band_rows*kw, H)
    if lat.shape[0] > 1:  # (a graph's batch of 1 needs no transpose, which would copy it all)
        out = out.transpose(0, 1)
    return out.reshape(lat.shape[0], -1, out.shape[-1])[:, : kh * cols.shape[1]]
