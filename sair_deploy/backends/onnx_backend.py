"""ONNX Runtime backend: runs the graphs of a ``sair-export`` directory with numpy only (no torch).

Handles are ``OrtValue``s on the session's device, passed from graph to graph through IO binding:
on CUDA nothing goes back to the host between the upload and the one download; query calls write
their answers straight into rows of one output buffer. CUDA is used when onnxruntime-gpu is
installed and sees a GPU, otherwise the CPU. The export's manifest is read first; the hashes of
the graph files this backend loads are checked.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError, ModelError
from ..model.config import SAIRConfig
from .base import GPU_QUERY_CHUNK, ORT_CPU_QUERY_CHUNK, Counters, timed

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
_ELEM = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int32)": np.int32,
         "tensor(int64)": np.int64, "tensor(float16)": np.float16}


def available_providers() -> list[str]:
    import onnxruntime as ort

    return ort.get_available_providers()


# Set by processes that run nothing but sair's graphs (sair-inpaint, the benchmarks): the CPU
# backends they make share one thread pool (share_cpu_threads). A library does not make that
# choice for its caller: once a process has the pool, ONNX Runtime refuses every session there
# that asks for threads of its own, other code's included.
SHARE_CPU_THREADS = False
_pool: dict[str, int] = {}  # the process's one pool, once made: {"threads": its size, -1 unknown}


def share_cpu_threads(threads: int = 0) -> int:
    """Give this process one intra-op thread pool, ``threads`` wide (0: a thread per physical
    core), for every ONNX Runtime session made after it, and return its size (-1: a pool that
    other code made first, of a size unknown here). Later calls keep the first pool.

    A backend has a session per graph. With a pool each, every session's workers spin for a while
    after its run, on the cores the next graph's threads need: 13 threads for 7 graphs on 2
    cores, 7 with one pool. A 512² photo at scale 1 / 2, sair-b16 widths, medians of 9
    alternating processes on 2 cores: 5.10 / 11.48 s with one pool, 5.36 / 11.64 s with a pool
    each (one pool won 6 of the 9 pairs at scale 1, 5 at scale 2: inside this machine's noise)."""
    import onnxruntime as ort

    if "threads" not in _pool:
        try:
            ort.capi._pybind_state.set_global_thread_pool_sizes(threads, 1)
            _pool["threads"] = threads
        except Exception:  # ORT's own exception type: "Global thread pools have already been created"
            _pool["threads"] = -1
    return _pool["threads"]


class OnnxBackend:
    """The :class:`~sair_deploy.backends.base.Backend` interface over ONNX Runtime sessions.

    ``device``: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``.
    ``precision``: ``"fp32"``, ``"fp16"`` (needs ``sair-export --fp16``), ``"int8"`` (needs
    ``sair-export --int8``) or ``"auto"`` (fp16 on CUDA when exported; on the CPU int8 when
    exported and its accuracy gate passed; fp32 otherwise). ``threads``: intra-op threads on CPU
    (0 = all cores): a pool per session, or in a process that shares one pool
    (:func:`share_cpu_threads`, which ``sair-inpaint`` does), that pool, made this wide by the
    first backend that asks.
    """

    def __init__(self, export_dir: str | os.PathLike, device: str = "auto", precision: str = "auto",
                 threads: int = 0):
        import onnxruntime as ort

        from ..manifest import file_set, graph_files, load_manifest

        if device not in ("auto", "cpu", "cuda"):
            raise InputError(f"unknown device {device!r} for the ONNX backend (auto, cpu or cuda)")
        if precision == "bf16":
            raise InputError("--precision bf16 runs with the torch backend (a .safetensors "
                             "checkpoint); ONNX exports offer fp32, int8 (CPU) and fp16 (CUDA)")
        if precision not in ("auto", "fp32", "fp16", "int8"):
            raise InputError(f"unknown precision {precision!r} (auto, fp32, int8 or fp16)")
        self._ort = ort
        self.export_dir = Path(export_dir)
        has_cuda = _CUDA in available_providers()
        if device == "cuda" and not has_cuda:
            raise InputError("--device cuda needs onnxruntime-gpu with a working CUDA GPU "
                             "(pip install onnxruntime-gpu); or use --device cpu")
        use_cuda = has_cuda and device != "cpu"
        manifest = load_manifest(self.export_dir, check=set())
        has_fp16 = all("fp16" in g.get("files", {}) for g in manifest["graphs"].values())
        if precision == "auto" and use_cuda:
            precision = "fp16" if has_fp16 else "fp32"
        elif precision == "auto":
            from ..precision import pick_precision

            has_int8 = all("int8" in g.get("files", {}) for g in manifest["graphs"].values())
            precision = pick_precision("auto", "onnx", ("int8",) if has_int8 else (),
                                       manifest.get("precision_gate"))
        files = graph_files(manifest, precision)
        load_manifest(self.export_dir, check=file_set(manifest, precision))  # hashes of what we load
        self.manifest = manifest
        self.config = SAIRConfig.from_dict(manifest["config"])
        self.precision = precision
        self.name = "onnx-cuda" if use_cuda else "onnx-cpu"
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only: the optimiser's notes are not the user's business
        if not use_cuda and SHARE_CPU_THREADS:
            share_cpu_threads(threads)
        if _pool:  # ONNX Runtime's rule: in a process with a pool of its own, every session uses it
            opts.use_per_session_threads = False
        elif threads:
            opts.intra_op_num_threads = threads
        if not use_cuda:
            # ONNX Runtime plans one block for a run's intermediates per set of input shapes and
            # keeps it; every image brings new shapes, so each first run took a fresh block: 233k
            # page faults (about 1 GB) and 1.1 s of kernel time at a 512² image's first scale-1
            # pass, none without the plans (the arena still reuses freed tensors)
            opts.enable_mem_pattern = False
        providers = [_CUDA, _CPU] if use_cuda else [_CPU]
        self.sessions = {}
        self._inputs: dict[str, list[tuple[str, type]]] = {}
        self._outputs: dict[str, list[str]] = {}
        for name, rel in files.items():
            try:
                sess = ort.InferenceSession(str(self.export_dir / rel), opts, providers=providers)
            except Exception as exc:  # ORT raises its own exception types
                raise ModelError(f"ONNX Runtime cannot load {self.export_dir / rel}: "
                                 f"{str(exc).splitlines()[0][:200]}") from None
            self.sessions[name] = sess
            self._inputs[name] = [(i.name, _ELEM.get(i.type, np.float32)) for i in sess.get_inputs()]
            self._outputs[name] = [o.name for o in sess.get_outputs()]
        if use_cuda and any(s.get_providers()[0] != _CUDA for s in self.sessions.values()):
            if device == "cuda":
                raise InputError("ONNX Runtime could not start its CUDA provider (see its log); "
                                 "check the CUDA/cuDNN install or use --device cpu")
            self.name = "onnx-cpu"  # onnxruntime-gpu without a usable GPU falls back to the CPU
        self._device = "cuda" if self.name == "onnx-cuda" else "cpu"
        self.counters = Counters()
        self.query_chunk = GPU_QUERY_CHUNK if self._device == "cuda" else ORT_CPU_QUERY_CHUNK

    # ---- memory ----------------------------------------------------------------------------
    def upload(self, array: np.ndarray):
        with timed(self.counters):
            self.counters.h2d_bytes += array.nbytes
            # memory of ONNX Runtime's own: an OrtValue made from a numpy array on the CPU would
            # point into that array, which may be gone before the graphs read it
            value = self._ort.OrtValue.ortvalue_from_shape_and_type(array.shape, array.dtype, self._device, 0)
            value.update_inplace(np.ascontiguousarray(array))
            return value

    def download(self, handle) -> np.ndarray:
        with timed(self.counters):
            out = handle.numpy()
            self.counters.d2h_bytes += out.nbytes
            return out

    def empty(self, rows: int):
        return self._ort.OrtValue.ortvalue_from_shape_and_type((rows, 3), np.float32, self._device, 0)

    def nbytes(self, handle) -> int:
        return int(np.prod(handle.shape())) * np.dtype(_ELEM.get(handle.data_type(), np.float32)).itemsize

    # ---- graphs ----------------------------------------------------------------------------
    def _bind(self, graph: str, inputs):
        if graph not in self.sessions:
            raise ModelError(f"this export has no {graph!r} graph: re-export it with this version "
                             f"of sair-export")
        binding = self.sessions[graph].io_binding()
        inputs = [a for a in inputs if a is not None]
        names = self._inputs[graph]
        if len(inputs) != len(names):
            raise InputError(f"graph {graph} takes {[n for n, _ in names]}, got {len(inputs)} arrays")
        for (name, dtype), a in zip(names, inputs):
            if isinstance(a, np.ndarray):  # a plan vector: a few integers from the host
                a = np.ascontiguousarray(a, dtype=dtype)
                self.counters.h2d_bytes += a.nbytes if self._device == "cuda" else 0
                binding.bind_cpu_input(name, a)
            else:
                binding.bind_ortvalue_input(name, a)
        return binding

    def run(self, graph: str, *inputs):
        with timed(self.counters):
            self.counters.count(graph)
            binding = self._bind(graph, inputs)
            for name in self._outputs[graph]:
                binding.bind_output(name, self._device, 0)
            self.sessions[graph].run_with_iobinding(binding)
            outs = binding.get_outputs()
            return outs[0] if len(outs) == 1 else tuple(outs)

    def run_into(self, graph: str, out, start: int, count: int, *inputs) -> None:
        with timed(self.counters):
            self.counters.count(graph)
            binding = self._bind(graph, inputs)
            ptr = out.data_ptr() + start * 3 * 4  # rows of float32 RGB
            binding.bind_output(self._outputs[graph][0], self._device, 0, np.float32, [1, count, 3], ptr)
            self.sessions[graph].run_with_iobinding(binding)
