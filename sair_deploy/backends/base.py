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
        """Whole image ``(1,3,H,W)`` with holes filled (models whose ``fill`` is not ``"zero"``)."""

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


# Rows of the query MLP that stay in a CPU core's cache: with the paper's widths a call of 1024
# queries keeps every hidden activation (4 x 1024 x 256 floats) near 4 MB, and the MLP runs at
# its matrix-product rate instead of waiting on memory (bench/speed.py, 2-2.5x at scale 2).
CPU_QUERY_CHUNK = 1024


def in_pieces(run, coord: np.ndarray, piece: int | None) -> np.ndarray:
    """``run(coord)`` over pieces of at most ``piece`` queries of ``coord (1, Q, 2)``,
    concatenated: the same answers as one call (``None``: one call)."""
    n = coord.shape[1]
    if piece is None or n <= piece:
        return run(coord)
    return np.concatenate([run(coord[:, s:s + piece]) for s in range(0, n, piece)], axis=1)


def query_in_pieces(run, air_pre, grid: np.ndarray, coord: np.ndarray, cell: np.ndarray,
                    piece: int | None) -> np.ndarray:
    """``run(air_pre, grid, coord, cell)`` computed in cache-sized pieces of the queries."""
    return in_pieces(lambda c: run(air_pre, grid, c, cell), coord, piece)
