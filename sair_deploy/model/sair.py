"""SAIR: encode an image once, then answer RGB queries at any continuous coordinate.

This is the literal model of the paper (the reference path): ``query`` evaluates SIR's and AIR's
MLPs on every neighbour of every query. :mod:`.fast` computes the same function with the
per-image work hoisted out; training, export and the runtimes use the modules defined here.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .air import AIR
from .appearance import AppEncoder, fold_batchnorm
from .appearance import for_export as encoder_for_export
from .config import SAIRConfig
from .fill import fill_holes
from .liif import on_device
from .semantic import SemanticEncoder
from .sir import SIR


class Features(NamedTuple):
    """Per-image features: the dense CLIP grid, its hole fractions, and appearance features."""

    embedding: Tensor | None  # E (B, D, h, w); None in the LIIF ablation
    holes: Tensor | None  # (B, 1, h, w) fraction of each latent cell that was a hole
    app: Tensor  # Z (B, C, H, W)
    base: Tensor | None = None  # the filled image (B, 3, H, W) AIR adds its residual to, if any


def pixel_cell(height: int, width: int, like: Tensor) -> Tensor:
    """The cell of the input pixel grid, ``(1, 1, 2)``: SIR is read at input pixel centres."""
    return on_device(torch.tensor([[[2.0 / height, 2.0 / width]]], dtype=like.dtype), like)


class SAIR(nn.Module):
    def __init__(self, cfg: SAIRConfig):
        super().__init__()
        self.cfg = cfg
        self.app_encoder = AppEncoder(cfg.app, zero_holes=cfg.fill == "zero")
        sem_dim = cfg.semantic.embed_dim if cfg.use_semantic else 0
        if cfg.use_semantic:
            self.semantic = SemanticEncoder(cfg.semantic)
            self.sir = SIR(sem_dim, cfg.sir, unfold=cfg.sir_unfold)
        self.air = AIR(cfg.app.out_channels, sem_dim, cfg.air, cfg.base)

    def for_inference(self) -> "SAIR":
        """This model in eval mode for inference, sharing its weights, with the AppEncoder's
        BatchNorms folded into its convolutions (a copy of the encoder alone; ``self`` is left as
        it is, so a model still in training can be evaluated)."""
        return self._with_encoder(fold_batchnorm(self.app_encoder))

    def for_export(self) -> "SAIR":
        """This model in eval mode as the exported graphs trace it, sharing its weights: the
        AppEncoder (a copy) runs its transposed convolutions as convolutions
        (:func:`~sair_deploy.model.appearance.for_export`, the same function)."""
        return self._with_encoder(encoder_for_export(self.app_encoder))

    def _with_encoder(self, encoder: AppEncoder) -> "SAIR":
        """A shallow copy of this model in eval mode with ``encoder`` as its AppEncoder."""
        model = copy.copy(self)
        model._modules = dict(self._modules)  # a shallow copy shares the module dict
        model._modules["app_encoder"] = encoder
        return model.eval()

    # ---- per image -------------------------------------------------------------------------
    def encode_semantic(self, sem_image: Tensor, sem_valid: Tensor) -> tuple[Tensor, Tensor]:
        """Dense CLIP grid of the masked, resized image and each latent cell's hole fraction."""
        emb = self.semantic(sem_image)  # holes are already black (preprocess.semantic_input)
        ps = self.cfg.semantic.patch_size
        holes = 1 - F.avg_pool2d(sem_valid, ps)
        return emb, holes

    def fill_holes(self, image: Tensor, mask: Tensor) -> Tensor:
        """The image the AppEncoder sees: holes filled classically (``cfg.fill``) or as is."""
        return fill_holes(self.cfg.fill, image, mask)

    def encode_appearance(self, image: Tensor, mask: Tensor) -> Tensor:
        """Appearance features of an image already passed through :meth:`fill_holes`."""
        return self.app_encoder(image, mask)

    def encode(self, image: Tensor, mask: Tensor, sem_image: Tensor | None = None,
               sem_valid: Tensor | None = None) -> Features:
        """``image (B,3,H,W)`` in [0,1], ``mask (B,1,H,W)`` 1 = hole; ``sem_*`` from
        :func:`sair_deploy.preprocess.semantic_input` (ignored in the LIIF ablation)."""
        filled = self.fill_holes(image, mask)
        app = self.encode_appearance(filled, mask)
        base = filled if self.cfg.residual else None
        if not self.cfg.use_semantic:
            return Features(None, None, app, base)
        if sem_image is None or sem_valid is None:
            raise ValueError("this model has a semantic branch: pass sem_image and sem_valid")
        emb, holes = self.encode_semantic(sem_image, sem_valid)
        return Features(emb, holes, app, base)

    # ---- per query (literal) ---------------------------------------------------------------
    def semantic_at(self, feats: Features, coord: Tensor, cell: Tensor) -> Tensor:
        """SIR: the semantic embedding at ``coord (B, Q, 2)``."""
        return self.sir(feats.embedding, feats.holes, coord, cell)

    def query(self, feats: Features, coord: Tensor, cell: Tensor) -> Tensor:
        """AIR: RGB at ``coord (B, Q, 2)`` for output pixels of size ``cell``."""
        semantic = None
        if self.cfg.use_semantic:
            h, w = feats.app.shape[-2:]
            pc = pixel_cell(h, w, coord)
            semantic = lambda centres: self.semantic_at(feats, centres, pc)  # noqa: E731
        return self.air(feats.app, semantic, coord, cell, feats.base)

    def forward(self, image: Tensor, mask: Tensor, sem_image: Tensor | None,
                sem_valid: Tensor | None, coord: Tensor, cell: Tensor) -> Tensor:
        return self.query(self.encode(image, mask, sem_image, sem_valid), coord, cell)
