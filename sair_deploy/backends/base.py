"""The interface every runtime backend implements: run named graphs over device handles.

A *handle* is whatever the backend keeps on its device (a torch tensor, an ONNX Runtime
``OrtValue``, a TensorRT device buffer). The runtime (:mod:`sair_deploy.inpainter`) uploads the
image once, feeds graph outputs straight into the next graph, and downloads the result once; the
only other things it hands a graph are small int64 vectors (numpy) that say what to compute.
See :mod:`sair_deploy.model.graphs` for the graphs and their integer vectors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..model.config import SAIRConfig
from ..tiling import RuntimePlan

Handle = Any

# Queries per call that keep a CPU core's cache busy: with the paper's widths a call of 1024
# queries keeps every hidden activation (4 x 1024 x 256 floats) near 4 MB, and the MLP runs at its
# matrix-product rate instead of waiting on memory (bench/speed.py, 2-2.5x at scale 2).
CPU_QUERY_CHUNK = 1024
# ONNX Runtime's CPU provider pays ~10 ms per call for this graph (binding, ~250 small nodes):
# at 512^2 scale 2 the bundled model took 16.3 s in calls of 1024 queries, 6.8 s in 8192, 6.3 s in
# 16384 (the torch backend 6.1 s in 1024); it answers in larger calls.
ORT_CPU_QUERY_CHUNK = 16384
# Queries per call on a GPU: as many as a 512-pixel tile has at scale 2, so calls scale with tiles.
GPU_QUERY_CHUNK = RuntimePlan().chunk


@dataclass
class Counters:
    """What the runtime asked of a backend: graph calls, bytes each way, time inside the backend."""

    calls: int = 0
    h2d_bytes: int = 0
    d2h_bytes: int = 0
    busy_s: float = 0.0
    per_graph: dict[str, int] = field(default_factory=dict)

    def reset(self) -> None:
        self.calls = self.h2d_bytes = self.d2h_bytes = 0
        self.busy_s = 0.0
        self.per_graph = {}

    def count(self, graph: str) -> None:
        self.calls += 1
        self.per_graph[graph] = self.per_graph.get(graph, 0) + 1


class timed:
    """Context manager adding the time spent inside a backend method to ``counters.busy_s``."""

    def __init__(self, counters: Counters):
        self.counters = counters

    def __enter__(self) -> None:
        self.t = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.counters.busy_s += time.perf_counter() - self.t


@runtime_checkable
class Backend(Protocol):
    name: str  # "torch", "torch-cuda", "onnx-cpu", "onnx-cuda", "trt"
    config: SAIRConfig
    precision: str  # "fp32", "fp16", ...
    counters: Counters
    query_chunk: int  # queries per query call this backend wants

    def upload(self, array: np.ndarray) -> Handle:
        """Copy a host array to the device (counted in ``counters.h2d_bytes``)."""

    def download(self, handle: Handle) -> np.ndarray:
        """Copy a device array back to the host (counted in ``counters.d2h_bytes``)."""

    def empty(self, rows: int) -> Handle:
        """A float32 ``(rows, 3)`` device buffer that query calls write into."""

    def nbytes(self, handle: Handle) -> int:
        """Device bytes a handle holds (the runtime bounds its tile cache with it)."""

    def run(self, graph: str, *inputs: Handle | np.ndarray | None) -> Handle | tuple[Handle, ...]:
        """Run ``graph`` on device handles and int64 plan vectors (``None`` inputs are skipped);
        returns its output(s) as handles."""

    def run_into(self, graph: str, out: Handle, start: int, count: int,
                 *inputs: Handle | np.ndarray) -> None:
        """Run a query graph whose output ``(1, count, 3)`` goes to rows ``start..start+count-1``
        of ``out`` (a buffer from :meth:`empty`), without a copy where the backend can."""
