"""The same function as :class:`SAIR`, split into per-image precompute and cheap per-query work.

Three exact rewrites (paper notation, ``W1 = [W_z | W_s | W_rel | W_cell]`` a first layer):

* The first layer of each MLP is linear in its inputs, so its feature part is computed once per
  latent cell or pixel: a 3x3 convolution over ``[E, holes]`` for SIR and over the appearance
  features ``Z`` for AIR (LIIF's 3x3 unfold followed by a linear map *is* a 3x3 convolution).
  Only ``W_rel @ rel_coord + W_cell @ cell`` is left per query.
* SIR's output layer and the semantic block of AIR's first layer meet with nothing non-linear in
  between; they fold into one matrix ``W_s @ W_out``. Since the area weights sum to 1, the
  weighted sum over SIR's neighbours can be taken before it.
* ``S(x_q)`` is read at input pixel centres, which do not depend on the output scale: the whole
  semantic term of AIR's first layer is a per-pixel map, computed once per image.

Data flows ``semantic_precompute -> appearance_precompute -> query``; the runtime calls these on
blocks of the image (see :mod:`sair_deploy.inpainter`), training may call :meth:`query_sparse`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .liif import ensemble, gather_latents, local_neighbours, sample_base, scale_cell, unfold3x3
from .sair import SAIR, Features, pixel_cell


def _hidden(first: Tensor, rel: Tensor, w_rel: Tensor, cell_term: Tensor,
            layers: list[nn.Linear]) -> Tensor:
    """Finish the first layer (``first + W_rel rel + W_cell cell``) and run the hidden layers.

    ``first (..., 4, H)`` holds the gathered precomputed part; returns the last hidden
    activations (after ReLU). Rows are flattened so each layer is one matrix product.
    """
    shape = first.shape
    h = torch.addmm(first.reshape(-1, shape[-1]), rel.reshape(-1, 2), w_rel.T).view(shape)
    h = torch.relu(h + cell_term.unsqueeze(-2)).reshape(-1, shape[-1])  # cell: (B|1, 1, H)
    for lin in layers:
        h = torch.relu(torch.addmm(lin.bias, h, lin.weight.T))
    return h.view(*shape[:-1], h.shape[-1])


CPU_PIECE = 4096  # centres per piece of the semantic term on a CPU (its activations stay in cache)


class FastSAIR(nn.Module):
    """A view of a :class:`SAIR`'s weights arranged for fast inference (no parameters of its own)."""

    def __init__(self, model: SAIR):
        super().__init__()
        self.model = model
        self.cfg = model.cfg

    # ---- weights, split the way the rewrites need them ------------------------------------
    def _sir_first(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        lin = self.model.sir.mlp.linears[0]
        f = self.model.sir.latent_dim
        return lin.weight[:, :f], lin.weight[:, f:f + 2], lin.weight[:, f + 2:], lin.bias

    def _air_first(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        lin = self.model.air.mlp.linears[0]
        fz = self.model.air.app_dim * 9
        fs = fz + self.model.air.sem_dim
        w = lin.weight
        return w[:, :fz], w[:, fz:fs], w[:, fs:fs + 2], w[:, fs + 2:], lin.bias

    # ---- per image ----------------------------------------------------------------------
    def semantic_precompute(self, embedding: Tensor, holes: Tensor) -> Tensor:
        """SIR's first layer, feature part, at every latent cell: ``(B, hidden, h, w)``."""
        w_feat, _, _, bias = self._sir_first()
        lat = torch.cat([embedding, holes], dim=1)
        k = 3 if self.model.sir.unfold else 1
        weight = w_feat.reshape(w_feat.shape[0], lat.shape[1], k, k)
        return F.conv2d(lat, weight, bias, padding=k // 2)

    def semantic_term(self, sem_pre: Tensor, centres: Tensor, cell: Tensor) -> Tensor:
        """AIR's first-layer semantic term ``W_s S(x)`` at ``centres (B, N, 2)``: ``(B, N, hidden)``.

        Eagerly on a CPU it runs in pieces of :data:`CPU_PIECE` centres (the same numbers): a
        whole tile at once would hold 4 x N x hidden floats per layer, gigabytes at the paper's
        widths, and run at memory speed. Exported graphs take the whole tile in one go."""
        n = centres.shape[1]
        if not torch.compiler.is_exporting() and centres.device.type == "cpu" and n > CPU_PIECE:
            return torch.cat([self._semantic_term(sem_pre, centres[:, i:i + CPU_PIECE], cell)
                              for i in range(0, n, CPU_PIECE)], dim=1)
        return self._semantic_term(sem_pre, centres, cell)

    def _semantic_term(self, sem_pre: Tensor, centres: Tensor, cell: Tensor) -> Tensor:
        _, w_rel, w_cell, _ = self._sir_first()
        size = sem_pre.shape[-2:]
        nb = local_neighbours(centres, size)
        h = gather_latents(sem_pre, nb.row, nb.col)
        lins = self.model.sir.mlp.linears
        h = ensemble(_hidden(h, nb.rel_coord, w_rel, scale_cell(cell, size) @ w_cell.T, lins[1:-1]),
                     nb.weight)
        _, w_s, _, _, _ = self._air_first()
        return F.linear(h, w_s @ lins[-1].weight, w_s @ lins[-1].bias)

    def appearance_precompute(self, app_padded: Tensor, sem_term: Tensor | None) -> Tensor:
        """AIR's first layer, all but the per-query part, at every pixel of a block.

        ``app_padded (B, C, h+2, w+2)``: appearance features of the block with a 1-pixel border
        (zeros beyond the image, as LIIF's unfold pads), followed by the 3 base-colour channels
        for a residual model; ``sem_term (B, h*w, hidden)`` or None.
        Returns ``(B, hidden, h, w)`` (``hidden + 3`` channels, the base last, if residual).
        """
        w_z, _, _, _, bias = self._air_first()
        c = self.model.air.app_dim
        p = F.conv2d(app_padded[:, :c], w_z.reshape(w_z.shape[0], c, 3, 3), bias)
        if sem_term is not None:
            b, hid, h, w = p.shape
            p = p + sem_term.transpose(1, 2).reshape(b, hid, h, w)
        if self.cfg.residual:  # the base colours ride along as 3 extra channels
            p = torch.cat([p, app_padded[:, c:, 1:-1, 1:-1]], dim=1)
        return p

    # ---- per query ----------------------------------------------------------------------
    def query(self, air_pre: Tensor, grid: Tensor, coord: Tensor, cell: Tensor) -> Tensor:
        """RGB at ``coord (B, Q, 2)`` from a precomputed block.

        ``grid = [H, W, row0, col0]`` (float): the full image's size and where the block
        ``air_pre (B, hidden, h, w)`` starts in it. Every neighbour of every query must lie in
        the block; the runtime plans blocks with a margin so that it does.
        """
        _, _, w_rel, w_cell, _ = self._air_first()
        size = grid[:2]
        nb = local_neighbours(coord, size)
        origin = grid[2:].long()
        hidden = air_pre.shape[1] - (3 if self.cfg.residual else 0)
        h = gather_latents(air_pre[:, :hidden], nb.row - origin[0], nb.col - origin[1])
        base = None
        if self.cfg.residual:  # the base colours ride along as the last 3 channels
            base = sample_base(air_pre[:, hidden:], coord, self.cfg.base, origin, size)
        return self._decode(h, nb, scale_cell(cell, size) @ w_cell.T, base)

    def _decode(self, first: Tensor, nb, cell_term: Tensor, base: Tensor | None) -> Tensor:
        """From AIR's gathered first layer to RGB: hidden layers, ensemble, output, plus the base
        already interpolated at the queries (a residual model)."""
        _, _, w_rel, _, _ = self._air_first()
        lins = self.model.air.mlp.linears
        rgb = lins[-1](ensemble(_hidden(first, nb.rel_coord, w_rel, cell_term, lins[1:-1]), nb.weight))
        return rgb if base is None else rgb + base

    # ---- whole-image conveniences (tests, training) ---------------------------------------
    def precompute(self, feats: Features) -> Tensor:
        """AIR's precomputed first layer over the whole image, ``(B, hidden, H, W)``."""
        from ..coords import make_coord

        b, _, h, w = feats.app.shape
        sem_term = None
        if self.cfg.use_semantic:
            sem_pre = self.semantic_precompute(feats.embedding, feats.holes)
            centres = torch.from_numpy(make_coord((h, w))).to(feats.app)
            centres = centres.unsqueeze(0).expand(b, -1, -1)
            sem_term = self.semantic_term(sem_pre, centres, pixel_cell(h, w, feats.app))
        app = torch.cat([feats.app, feats.base], dim=1) if self.cfg.residual else feats.app
        return self.appearance_precompute(F.pad(app, (1, 1, 1, 1)), sem_term)

    def query_dense(self, feats: Features, coord: Tensor, cell: Tensor) -> Tensor:
        """RGB at ``coord`` via a whole-image precompute (equals ``SAIR.query``)."""
        pre = self.precompute(feats)
        h, w = feats.app.shape[-2:]
        grid = torch.tensor([h, w, 0, 0], dtype=coord.dtype, device=coord.device)
        return self.query(pre, grid, coord, cell)

    def query_sparse(self, feats: Features, coord: Tensor, cell: Tensor) -> Tensor:
        """RGB at a few coordinates without a dense precompute (training: few queries per image).

        The same function again: AIR's first layer is applied to gathered 3x3 neighbourhoods,
        SIR uses its precomputed first layer and the folded output.
        """
        w_z, _, w_rel, w_cell, bias = self._air_first()
        b, q = coord.shape[:2]
        size = feats.app.shape[-2:]
        nb = local_neighbours(coord, size)
        z = gather_latents(unfold3x3(feats.app), nb.row, nb.col)
        h = F.linear(z, w_z, bias)
        if self.cfg.use_semantic:
            sem_pre = self.semantic_precompute(feats.embedding, feats.holes)
            pc = pixel_cell(size[0], size[1], coord)
            t = self.semantic_term(sem_pre, nb.centre.reshape(b, q * 4, 2), pc)
            h = h + t.view(b, q, 4, -1)
        base = sample_base(feats.base, coord, self.cfg.base) if self.cfg.residual else None
        return self._decode(h, nb, scale_cell(cell, size) @ w_cell.T, base)
