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

# Queries per torch CPU call, taken in one piece (model.fast: CPU_QUERY_PIECE). On the rows path
# (channels last, oneDNN's fused products) larger calls won over cache-sized pieces: 512^2, paper
# widths, 2 threads, an Intel Xeon with AMX, medians of 5 interleaved runs (s): scale 2 fp32 17.9
# / 15.5 / 14.1, bf16 7.1 / 6.2 / 6.5, scale 1 bf16 3.7 / 3.1 / 3.0 in calls of 4096 (pieces of
# 1024) / 8192 / 16384. (The channels-first design of an earlier session preferred 1024-query
# pieces.)
CPU_QUERY_CHUNK = 8192
# ONNX Runtime's CPU provider runs each call's MLP one neighbour at a time (4096 x hidden
# activations) and pays for its ~300 small nodes per call. Channels-first graphs, the bundled
# model, 512^2 at scale 1 / 2 (one run): 1.25 / 5.92 s in calls of 2048 queries, 1.11 / 5.62 s in
# 4096, 1.14 / 6.37 s in 16384. The rows graphs (format 3) at paper widths, the query calls' time
# at 512^2 scale 2, medians of 3 interleaved runs in one process: 7.3 s in calls of 4096, 8.0 s
# in 8192, 7.1 s in 16384, within this machine's noise of each other.
ORT_CPU_QUERY_CHUNK = 4096
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
