"""AIR, the appearance implicit representation (paper Sec. 4.3, Eq. 5).

``I(x) = sum_q w_q f_phi([z~_q, S(x_q)], x - x_q, cell)`` over the four full-resolution pixels
``q`` around ``x``: ``z~_q`` is the 3x3 unfolded AppEncoder feature, ``S(x_q)`` the SIR embedding
at the pixel's centre (absent in the LIIF ablation), ``cell`` the output pixel's size.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from .config import MLPConfig
from .liif import ensemble, gather_latents, local_neighbours, sample_base, scale_cell, unfold3x3
from .mlp import MLP

SemanticField = Callable[[Tensor], Tensor]  # centres (B, N, 2) -> S (B, N, D)


class AIR(nn.Module):
    def __init__(self, app_dim: int, sem_dim: int, mlp: MLPConfig, base: str = "bilinear"):
        super().__init__()
        self.base = base  # how a residual's base is interpolated (liif.sample_base)
        self.app_dim = app_dim
        self.sem_dim = sem_dim
        self.mlp = MLP(app_dim * 9 + sem_dim + 4, 3, mlp.hidden, mlp.depth)

    def forward(self, app: Tensor, semantic: SemanticField | None, coord: Tensor,
                cell: Tensor, base: Tensor | None = None, base_kind: str = "bilinear") -> Tensor:
        """RGB at ``coord (B, Q, 2)`` from appearance features ``app (B, C, H, W)``.

        With ``base (B, 3, H, W)`` (the filled image) the ensemble is a residual over the base
        interpolated at ``coord`` (bilinearly, bicubically or with Lanczos-3: ``self.base``).
        """
        size = app.shape[-2:]
        nb = local_neighbours(coord, size)
        z = gather_latents(unfold3x3(app), nb.row, nb.col)  # (B, Q, 4, 9C)
        parts = [z]
        if semantic is not None:
            b, q = coord.shape[:2]
            s = semantic(nb.centre.reshape(b, q * 4, 2)).view(b, q, 4, -1)
            parts.append(s)
        c = scale_cell(cell, size).unsqueeze(-2).expand(*nb.rel_coord.shape)
        pred = self.mlp(torch.cat(parts + [nb.rel_coord, c], dim=-1))
        rgb = ensemble(pred, nb.weight)
        return rgb if base is None else rgb + sample_base(base, coord, self.base)
