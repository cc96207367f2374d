"""The interface every runtime backend implements: four graphs over numpy arrays.

Arrays are float32 with a batch dimension of 1. What ``semantic`` and ``precompute`` return is
only handed back to the same backend (to ``precompute`` and ``query``), so a backend may keep it
on its device; it must have ``.nbytes`` (the runtime bounds its cache with it). The runtime
(:mod:`sair_deploy.inpainter`) calls
``semantic`` once per image, ``appearance`` once per tile, ``precompute`` once per block and
``query`` once per chunk of coordinates; see :mod:`sair_deploy.model.graphs` for the shapes.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..model.config import SAIRConfig


@runtime_checkable
class Backend(Protocol):
    name: str  # "torch", "onnx-cpu", "onnx-cuda", "trt"
    config: SAIRConfig

    def semantic(self, sem_image: np.ndarray, sem_valid: np.ndarray) -> np.ndarray:
        """``(1,3,h,w), (1,1,h,w)`` -> SIR's precomputed first layer ``(1,hidden,h/16,w/16)``
        (opaque: it only goes back into ``precompute``)."""

    def fill(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Whole image ``(1,3,H,W)`` with holes push-pull filled (models with ``fill="pushpull"``)."""

    def appearance(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``(1,3,H,W)`` in [0,1], ``(1,1,H,W)`` 1 = hole -> appearance features ``(1,C,H,W)``."""

    def precompute(self, app: np.ndarray, sem_pre: np.ndarray | None,
                   centres: np.ndarray | None, pixel_cell: np.ndarray | None) -> np.ndarray:
        """A block's AIR precompute ``(1,hidden,h,w)`` from ``app (1,C,h+2,w+2)``; the semantic
        arguments are None for a model without the semantic branch (opaque: it only goes back
        into ``query``)."""

    def query(self, air_pre: np.ndarray, grid: np.ndarray, coord: np.ndarray,
              cell: np.ndarray) -> np.ndarray:
        """RGB ``(1,Q,3)`` at ``coord (1,Q,2)``; ``grid = [H, W, row0, col0]`` float32."""
