"""PyTorch backend: runs the same graph modules the exporter traces (imports torch)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from ..model.config import SAIRConfig
from ..precision import cpu_supports_bf16
from .base import CPU_QUERY_CHUNK, query_in_pieces


class TorchBackend:
    """Runs :func:`sair_deploy.model.graphs.build_graphs` on CPU or CUDA.

    Also offers the literal reference path (:meth:`reference_features`, :meth:`reference_query`)
    for tests and benchmarks.
    """

    def __init__(self, model, device: str = "cpu", fp16: bool = False, precision: str = "fp32"):
        import torch

        from ..model.graphs import build_graphs

        if device.startswith("cuda") and not torch.cuda.is_available():
            from ..errors import InputError
            raise InputError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
        self._torch = torch
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config: SAIRConfig = model.cfg
        self.graphs = build_graphs(self.model)
        self.name = "torch" if self.device.type == "cpu" else f"torch-{self.device.type}"
        # fp16/bf16 through autocast: convolutions and matrix products in half precision, while
        # the coordinate and index arithmetic (floor, gathers' indices) stays in float32; bf16
        # also keeps normalisation, softmax and the final RGB layer in float32 (_Float32Islands)
        if fp16:
            precision = "fp16"
        if precision not in ("fp32", "fp16", "bf16"):
            from ..errors import InputError
            raise InputError(f"unknown precision {precision!r} for the torch backend (fp32, bf16, fp16)")
        if precision == "bf16" and (self.device.type != "cpu" or not cpu_supports_bf16()):
            from ..errors import InputError
            raise InputError("--precision bf16 needs a CPU with avx512_bf16 or amx_bf16 (this one "
                             "has neither) and --device cpu; use --precision fp32")
        self.precision = precision
        self.fp16 = precision == "fp16"
        self._autocast = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        self._islands = None
        if precision == "bf16":
            from ..model.lowp import Float32Islands
            self._islands = Float32Islands(self.model.air.mlp.linears[-1].weight)
        if precision != "fp32":
            self.name += f"-{precision}"
        # a GPU wants big calls; a CPU core wants the MLP's activations to fit its cache
        self.query_piece = CPU_QUERY_CHUNK if self.device.type == "cpu" else None

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu",
                        precision: str = "fp32") -> "TorchBackend":
        from ..model.checkpoint import load_checkpoint

        return cls(load_checkpoint(path), device, precision=precision)

    def _run(self, name: str, *arrays, keep: bool = False):
        """Run graph ``name``; ``keep`` leaves the result on the device (an opaque handle that
        only goes back into this backend), else it comes back as a float32 numpy array."""
        torch = self._torch
        islands = self._islands if self._islands is not None else contextlib.nullcontext()
        with torch.inference_mode(), torch.autocast(self.device.type, self._autocast or torch.float16,
                                                    enabled=self._autocast is not None), islands:
            args = [a if isinstance(a, torch.Tensor) else
                    torch.from_numpy(np.ascontiguousarray(a)).to(self.device)
                    for a in arrays if a is not None]
            out = self.graphs[name](*args)
            return out if keep else out.float().cpu().numpy()

    def semantic(self, sem_image: np.ndarray, sem_valid: np.ndarray):
        return self._run("semantic", sem_image, sem_valid, keep=True)

    def fill(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._run("fill", image, mask)

    def appearance(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._run("appearance", image, mask)

    def precompute(self, app, sem_pre=None, centres=None, pixel_cell=None):
        return self._run("precompute", app, sem_pre, centres, pixel_cell, keep=True)

    def query(self, air_pre, grid, coord, cell) -> np.ndarray:
        run = lambda *a: self._run("query", *a)  # noqa: E731
        return query_in_pieces(run, air_pre, grid, coord, cell, self.query_piece)

    # ---- the literal path of the paper --------------------------------------------------
    def reference_features(self, image, mask, sem_image=None, sem_valid=None):
        """Whole-image features for :meth:`reference_query` (no tiling)."""
        torch = self._torch
        t = lambda a: None if a is None else torch.from_numpy(np.ascontiguousarray(a)).to(self.device)  # noqa: E731
        with torch.inference_mode():
            return self.model.encode(t(image), t(mask), t(sem_image), t(sem_valid))

    def reference_query(self, feats, coord: np.ndarray, cell: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            c = torch.from_numpy(coord).to(self.device)
            return self.model.query(feats, c, torch.from_numpy(cell).to(self.device)).cpu().numpy()
