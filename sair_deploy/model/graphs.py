"""One small module per deployed graph, each with a fixed, flat signature (batch of 1).

The torch backend runs these modules; the exporter traces exactly these modules to ONNX. The
runtime calls them in this order: ``semantic`` (and ``fill``, for a push-pull model) once per
image, ``appearance`` once per tile, ``precompute`` once per block, ``query`` once per chunk of
coordinates.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .fast import FastSAIR
from .sair import SAIR


class SemanticGraph(nn.Module):
    """``sem_image (1,3,h,w)``, ``sem_valid (1,1,h,w)`` -> ``sem_pre (1,hidden_sir,h/16,w/16)``."""

    def __init__(self, model: SAIR):
        super().__init__()
        self.fast = FastSAIR(model)

    def forward(self, sem_image: Tensor, sem_valid: Tensor) -> Tensor:
        emb, holes = self.fast.model.encode_semantic(sem_image, sem_valid)
        return self.fast.semantic_precompute(emb, holes)


class FillGraph(nn.Module):
    """``image (1,3,H,W)``, ``mask (1,1,H,W)`` -> the image with holes filled (``cfg.fill``).

    Runs once on the whole image (the fill is global), before the tiled AppEncoder."""

    def __init__(self, model: SAIR):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        return self.model.fill_holes(image, mask)


class AppearanceGraph(nn.Module):
    """``image (1,3,H,W)`` in [0,1] (filled, for a fill model), ``mask (1,1,H,W)`` ->
    ``app (1,C,H,W)``; H, W multiples of 4. A residual model appends the image's 3 channels,
    the base colours its queries add to."""

    def __init__(self, model: SAIR):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        app = self.model.encode_appearance(image, mask)
        return torch.cat([app, image], dim=1) if self.model.cfg.residual else app


class PrecomputeGraph(nn.Module):
    """Per-block precompute of AIR's first layer.

    ``app (1,C,h+2,w+2)`` (block plus a 1-pixel border, zeros outside the image),
    ``sem_pre`` from :class:`SemanticGraph`, ``centres (1,h*w,2)`` the block's pixel centres,
    ``pixel_cell (1,1,2)`` = ``(2/H, 2/W)`` -> ``air_pre (1,hidden_air,h,w)``.
    """

    def __init__(self, model: SAIR):
        super().__init__()
        self.fast = FastSAIR(model)

    def forward(self, app: Tensor, sem_pre: Tensor, centres: Tensor, pixel_cell: Tensor) -> Tensor:
        term = self.fast.semantic_term(sem_pre, centres, pixel_cell)
        return self.fast.appearance_precompute(app, term)


class PrecomputeGraphNoSemantic(nn.Module):
    """:class:`PrecomputeGraph` for the LIIF ablation: ``app`` -> ``air_pre``."""

    def __init__(self, model: SAIR):
        super().__init__()
        self.fast = FastSAIR(model)

    def forward(self, app: Tensor) -> Tensor:
        return self.fast.appearance_precompute(app, None)


class QueryGraph(nn.Module):
    """``air_pre (1,hidden,h,w)``, ``grid (4,) = [H, W, row0, col0]``, ``coord (1,Q,2)``,
    ``cell (1,1,2)`` -> ``rgb (1,Q,3)`` (not clamped)."""

    def __init__(self, model: SAIR):
        super().__init__()
        self.fast = FastSAIR(model)

    def forward(self, air_pre: Tensor, grid: Tensor, coord: Tensor, cell: Tensor) -> Tensor:
        return self.fast.query(air_pre, grid, coord, cell)


def build_graphs(model: SAIR) -> dict[str, nn.Module]:
    """The graphs a model deploys as, by name, in eval mode."""
    model = model.eval()
    graphs: dict[str, nn.Module] = {"appearance": AppearanceGraph(model), "query": QueryGraph(model)}
    if model.cfg.fill != "zero":
        graphs["fill"] = FillGraph(model)
    if model.cfg.use_semantic:
        graphs["semantic"] = SemanticGraph(model)
        graphs["precompute"] = PrecomputeGraph(model)
    else:
        graphs["precompute"] = PrecomputeGraphNoSemantic(model)
    return {k: v.eval() for k, v in graphs.items()}
