"""SIR, the semantic implicit representation (paper Sec. 4.2, Eq. 4).

``S(x) = sum_q w_q f_theta([E~_q, hole_q], x - x_q, cell)`` over the four latent cells ``q`` of
the dense CLIP grid ``E`` around ``x``. ``hole_q`` is the fraction of latent cell ``q`` that was a
hole, so SIR knows which embeddings to trust and which to complete; ``E~`` is the 3x3 unfolded
grid (LIIF's feat_unfold) when ``unfold`` is set.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import MLPConfig
from .liif import ensemble, gather_latents, local_neighbours, scale_cell, unfold3x3
from .mlp import MLP


class SIR(nn.Module):
    def __init__(self, embed_dim: int, mlp: MLPConfig, unfold: bool = True):
        super().__init__()
        self.embed_dim = embed_dim
        self.unfold = unfold
        self.latent_dim = (embed_dim + 1) * (9 if unfold else 1)
        self.mlp = MLP(self.latent_dim + 4, embed_dim, mlp.hidden, mlp.depth)

    def latents(self, embedding: Tensor, holes: Tensor) -> Tensor:
        """The per-cell input of ``f_theta``: ``[E, hole fraction]``, 3x3 unfolded."""
        lat = torch.cat([embedding, holes], dim=1)
        return unfold3x3(lat) if self.unfold else lat

    def forward(self, embedding: Tensor, holes: Tensor, coord: Tensor, cell: Tensor) -> Tensor:
        """Semantic embedding at ``coord (B, Q, 2)``; ``cell (B, Q, 2)`` or broadcastable."""
        lat = self.latents(embedding, holes)
        size = lat.shape[-2:]
        nb = local_neighbours(coord, size)
        z = gather_latents(lat, nb.row, nb.col)  # (B, Q, 4, C)
        c = scale_cell(cell, size).unsqueeze(-2).expand(*nb.rel_coord.shape)
        pred = self.mlp(torch.cat([z, nb.rel_coord, c], dim=-1))
        return ensemble(pred, nb.weight)
