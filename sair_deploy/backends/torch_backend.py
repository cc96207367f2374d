"""PyTorch backend: runs the same graph modules the exporter traces (imports torch).

Handles are torch tensors on the backend's device; plan vectors stay on the host (the graphs
read them as Python integers). ``device="meta"`` gives a stand-in that computes every shape and
counts every call and byte but does no arithmetic (``bench/runtime.py``, the budget tests).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from ..model.config import SAIRConfig
from ..precision import cpu_supports_bf16
from .base import CPU_QUERY_CHUNK, GPU_QUERY_CHUNK, Counters, timed


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of handing it back to the kernel.

    torch on a CPU allocates each intermediate afresh (a query call's activations are 4-8 MB
    each); by default glibc serves such blocks with ``mmap`` or trims them off the heap when
    freed, so every call touches fresh pages: 0.1-1 million page faults per 512² image here, a
    second or more of kernel time in float32. With a high mmap and trim threshold the freed
    blocks are reused. The peak memory is the same; it is just not returned between calls.
    Leaves the thresholds alone if ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` is
    set (the user chose) or where the C library is not glibc. Returns whether it set them."""
    import ctypes
    import ctypes.util
    import os
    import platform

    if platform.system() != "Linux" or {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, (1 << 31) - 1))


class TorchBackend:
    """Runs :func:`sair_deploy.model.graphs.build_graphs` on CPU, CUDA (or meta).

    ``precision``: ``fp32``, ``fp16`` (CUDA) or ``bf16`` (a CPU with bfloat16 units), run under
    autocast: convolutions and matrix products in half precision, coordinate and index arithmetic
    in float32; bf16 also keeps normalisation, softmax and the final RGB layer in float32. Also offers the literal reference
    path (:meth:`reference_features`, :meth:`reference_query`) for tests and benchmarks.

    The graphs run :meth:`SAIR.for_inference` (BatchNorms folded; ``model`` itself is left as
    it is). On a CPU the backend calls :func:`keep_freed_memory` once: a process-wide malloc
    setting, so the process keeps its peak memory between images instead of faulting it in
    again for every query call.
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
        # the graphs run the model with its BatchNorms folded (ONNX Runtime and TensorRT fold
        # them too); the reference path below keeps the model as given
        self.graphs = build_graphs(self.model.for_inference())
        self.name = "torch" if self.device.type == "cpu" else f"torch-{self.device.type}"
        if fp16:
            precision = "fp16"
        if precision not in ("fp32", "fp16", "bf16"):
            from ..errors import InputError
            raise InputError(f"unknown precision {precision!r} for the torch backend (fp32, bf16, fp16)")
        if precision == "bf16" and (self.device.type != "cpu" or not cpu_supports_bf16()):
            from ..errors import InputError
            raise InputError("--precision bf16 needs a CPU with avx512_bf16 or amx_bf16 and "
                             "--device cpu; use --precision fp32")
        self.precision = precision
        self.fp16 = precision == "fp16"
        self._autocast = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        self._islands = None
        if precision == "bf16":
            from ..model.lowp import Float32Islands
            self._islands = Float32Islands(self.model.air.mlp.linears[-1].weight)
        if precision != "fp32":
            self.name += f"-{precision}"
        self.counters = Counters()
        if self.device.type == "cpu":
            keep_freed_memory()
        # a GPU wants big calls; a CPU core wants the MLP's activations to fit its cache
        self.query_chunk = CPU_QUERY_CHUNK if self.device.type == "cpu" else GPU_QUERY_CHUNK

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu",
                        precision: str = "fp32") -> "TorchBackend":
        from ..model.checkpoint import load_checkpoint

        return cls(load_checkpoint(path), device, precision=precision)

    # ---- memory ----------------------------------------------------------------------------
    def upload(self, array: np.ndarray):
        with timed(self.counters):
            self.counters.h2d_bytes += array.nbytes
            array = np.ascontiguousarray(array)
            if not array.flags.writeable:  # torch tensors may not share read-only memory
                array = array.copy()
            t = self._torch.from_numpy(array)
            if self.device.type == "meta":
                return t.to("meta")
            return t.to(self.device, non_blocking=False)

    def download(self, handle) -> np.ndarray:
        with timed(self.counters):
            self.counters.d2h_bytes += handle.nbytes
            if handle.device.type == "meta":
                return np.zeros(tuple(handle.shape), dtype=_numpy_dtype(handle.dtype))
            if handle.is_cuda:  # into pinned memory: a copy to pageable memory runs at a tenth the speed
                host = self._torch.empty(handle.shape, dtype=handle.dtype, pin_memory=True)
                out = host.copy_(handle).numpy()
            else:
                out = handle.numpy()
            return out.astype(np.float32) if out.dtype == np.float16 else out

    def empty(self, rows: int):
        return self._torch.empty((rows, 3), dtype=self._torch.float32, device=self.device)

    def nbytes(self, handle) -> int:
        return int(handle.nbytes)

    # ---- graphs ----------------------------------------------------------------------------
    def run(self, graph: str, *inputs):
        torch = self._torch
        amp = "cpu" if self.device.type == "meta" else self.device.type
        islands = self._islands if self._islands is not None else contextlib.nullcontext()
        with timed(self.counters), torch.inference_mode(), islands, \
                torch.autocast(amp, self._autocast or torch.float16, enabled=self._autocast is not None):
            self.counters.count(graph)
            args = [torch.from_numpy(a) if isinstance(a, np.ndarray) else a
                    for a in inputs if a is not None]
            # float16 results stay float16 on the device (half the bytes for the next graph to
            # read); query answers become float32 in the buffer they are written into
            return self.graphs[graph](*args)

    def run_into(self, graph: str, out, start: int, count: int, *inputs) -> None:
        rgb = self.run(graph, *inputs)
        with timed(self.counters):
            out[start:start + count] = rgb[0]

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


def _numpy_dtype(dtype) -> np.dtype:
    import torch

    return {torch.uint8: np.dtype(np.uint8), torch.int32: np.dtype(np.int32),
            torch.int64: np.dtype(np.int64)}.get(dtype, np.dtype(np.float32))
