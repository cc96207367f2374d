"""TensorRT backend: runs the engines of a ``sair-export --trt`` directory (no torch).

Device memory and copies go through cuda-python's runtime bindings (``cuda.bindings.runtime``).
Handles are device arrays: one engine's output is bound as the next one's input, plan vectors
(shape tensors) are read from the host, and the host synchronises once per download. Engines are
refused, with a one-line message, when they were built with another TensorRT version or for
another GPU.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, ModelError
from ..model.config import SAIRConfig
from .base import GPU_QUERY_CHUNK, Counters, timed


class TrtUnavailable(RuntimeError):
    """TensorRT or a CUDA GPU is missing: engines cannot be built here."""


def gpu_info(device: int = 0) -> dict[str, str]:
    """``{"gpu": name, "compute_capability": "8.9"}`` of a CUDA device, via cuda-python."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError:
            raise TrtUnavailable("cuda-python is not installed (pip install cuda-python)") from None
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count == 0:
        raise TrtUnavailable("no CUDA GPU is visible")
    err, prop = cudart.cudaGetDeviceProperties(device)
    if int(err) != 0:
        raise TrtUnavailable(f"cannot read the properties of CUDA device {device} ({err})")
    name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
    return {"gpu": name.rstrip("\x00").strip(), "compute_capability": f"{prop.major}.{prop.minor}"}


def check_engine_host(trt_section: dict[str, Any], trt_version: str, gpu: dict[str, str]) -> None:
    """Refuse engines built with another TensorRT or on another GPU (TensorRT engines are not
    portable). Raises :class:`sair_deploy.errors.ModelError` with a one-line message."""
    built = trt_section.get("tensorrt_version")
    if built != trt_version:
        raise ModelError(f"the TensorRT engines were built with TensorRT {built}, this is {trt_version}; "
                         f"rebuild them here with sair-export --trt --force")
    for key in ("gpu", "compute_capability"):
        if trt_section.get(key) != gpu.get(key):
            raise ModelError(f"the TensorRT engines were built for {trt_section.get('gpu')} (compute "
                             f"capability {trt_section.get('compute_capability')}), this GPU is "
                             f"{gpu.get('gpu')} ({gpu.get('compute_capability')}); rebuild them here "
                             f"with sair-export --trt --force")


def _cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError:
            raise InputError("the TensorRT backend needs cuda-python (pip install cuda-python)") from None
    return cudart


def _check(result):
    """Unwrap a cuda-python ``(err, *values)`` tuple, raising on an error code."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {int(err)} ({err})")
    return values[0] if len(values) == 1 else (values or None)


class DeviceArray:
    """A ``cudaMalloc`` allocation holding one array (a handle of this backend); freed with it."""

    def __init__(self, cudart, stream, shape: tuple[int, ...], dtype: np.dtype):
        self._cudart, self._stream = cudart, stream
        self.shape, self.dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.ptr = int(_check(cudart.cudaMallocAsync(max(self.nbytes, 256), stream)))

    def __del__(self) -> None:
        if getattr(self, "ptr", 0):
            self._cudart.cudaFreeAsync(self.ptr, self._stream)  # ordered after the work that used it
            self.ptr = 0


class PinnedStaging:
    """Page-locked host memory for the copies (asynchronous copies need it), handed out front to
    back and reclaimed at each synchronisation; it grows only when the stream is idle."""

    def __init__(self, backend: "TrtBackend"):
        self._backend = backend
        self.ptr, self.nbytes, self.used = 0, 0, 0

    def take(self, nbytes: int) -> tuple[int, np.ndarray]:
        """``(pointer, uint8 view)`` of ``nbytes`` free staging bytes."""
        import ctypes

        if self.used + nbytes > self.nbytes:
            self._backend.synchronize()  # everything staged so far has been copied
            if nbytes > self.nbytes:
                self.free()
                cudart = self._backend.cudart
                self.nbytes = max(nbytes, 2 * self.nbytes, 1 << 20)
                self.ptr = int(_check(cudart.cudaMallocHost(self.nbytes)))
        ptr = self.ptr + self.used
        self.used += nbytes + (-nbytes) % 256
        return ptr, np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(ptr))

    def free(self) -> None:
        if self.ptr:
            self._backend.cudart.cudaFreeHost(self.ptr)
            self.ptr, self.nbytes, self.used = 0, 0, 0


def _np_dtype(trt, dtype) -> np.dtype:
    try:
        return np.dtype(trt.nptype(dtype))
    except (AttributeError, TypeError):
        names = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64,
                 "BOOL": np.bool_, "INT8": np.int8, "UINT8": np.uint8}
        return np.dtype(names[dtype.name])


def _profile_values(engine, name: str):
    """``(min, max)`` value vectors a shape-tensor input's profile allows (TensorRT 10 and 8 APIs)."""
    for call in (lambda: engine.get_tensor_profile_values(0, name),
                 lambda: engine.get_tensor_profile_values(name, 0)):
        try:
            lo, _, hi = call()
            return list(lo), list(hi)
        except (AttributeError, TypeError):
            continue
    return None


class _Engine:
    """One deserialized engine with its execution context: binds device arrays and plan vectors
    (shape tensors, read on the host) and runs on the backend's stream without synchronising."""

    def __init__(self, trt, runtime, path: Path, backend: "TrtBackend"):
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ModelError(f"TensorRT could not load {path} (built by another TensorRT or GPU?); "
                             f"rebuild it with sair-export --trt --force")
        self.name = path.stem
        self.engine = engine
        self.context = engine.create_execution_context()
        self.backend = backend
        self.inputs, self.outputs = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            (self.inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else self.outputs).append(name)
        self.dtypes = {n: _np_dtype(trt, engine.get_tensor_dtype(n)) for n in self.inputs + self.outputs}
        self.host_inputs = {n for n in self.inputs if engine.is_shape_inference_io(n)}

    def check_shape(self, name: str, shape: tuple[int, ...]) -> None:
        if -1 not in tuple(self.engine.get_tensor_shape(name)):
            return
        lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
        if len(shape) != len(lo) or any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
            raise InputError(f"input {name} of {self.name} has shape {tuple(shape)}, outside the "
                             f"TensorRT engine's profile ({tuple(lo)} to {tuple(hi)}); use the sizes "
                             f"the engines were built for (see manifest.json) or rebuild them")

    def check_values(self, name: str, values: np.ndarray) -> None:
        bounds = _profile_values(self.engine, name)
        if bounds is None:
            return
        lo, hi = bounds
        if any(v < a or v > b for v, a, b in zip(values.tolist(), lo, hi)):
            raise InputError(f"input {name} of {self.name} holds {values.tolist()}, outside the "
                             f"TensorRT engine's profile values ({lo} to {hi}); the image or scale is "
                             f"larger than the engines were built for: rebuild them (sair-export --trt)")

    def __call__(self, inputs, out_address: int | None = None) -> list[DeviceArray]:
        ctx, be = self.context, self.backend
        keep = []  # host arrays and small uploads stay alive until the engine has read them
        for name, a in zip(self.inputs, inputs):
            if isinstance(a, np.ndarray):  # a plan vector
                a = np.ascontiguousarray(a, dtype=self.dtypes[name])
                ctx.set_input_shape(name, a.shape)
                if name in self.host_inputs:
                    self.check_values(name, a)
                    keep.append(a)
                    ctx.set_tensor_address(name, a.ctypes.data)
                    continue
                a = be.upload(a)
            if a.dtype != self.dtypes[name]:
                raise ModelError(f"{self.name} expects {name} as {self.dtypes[name]}, got {a.dtype}: "
                                 f"the engines do not match this runtime; rebuild them")
            self.check_shape(name, a.shape)
            keep.append(a)
            ctx.set_input_shape(name, a.shape)
            ctx.set_tensor_address(name, a.ptr)
        outs = []
        for k, name in enumerate(self.outputs):
            shape = tuple(ctx.get_tensor_shape(name))
            if k == 0 and out_address is not None:
                ctx.set_tensor_address(name, out_address)
                continue
            arr = DeviceArray(be.cudart, be.stream, shape, self.dtypes[name])
            ctx.set_tensor_address(name, arr.ptr)
            outs.append(arr)
        if not ctx.execute_async_v3(int(be.stream)):
            raise RuntimeError(f"TensorRT execution of {self.name} failed (see its log)")
        be.pending.extend(keep)  # released at the next synchronisation
        return outs


class TrtBackend:
    """The :class:`~sair_deploy.backends.base.Backend` interface over TensorRT engines.

    Every engine runs on one CUDA stream; outputs are device arrays bound straight into the next
    engine, query answers are written into rows of one buffer, copies go through pinned memory,
    and the stream is synchronised once per download (once per image).
    """

    name = "trt"

    def __init__(self, export_dir: str | os.PathLike, device: int = 0):
        try:
            import tensorrt as trt
        except ImportError:
            raise InputError("--backend trt needs TensorRT (pip install 'sair-deploy[gpu]' on a "
                             "CUDA host)") from None
        from ..manifest import load_manifest

        self.export_dir = Path(export_dir)
        manifest = load_manifest(self.export_dir, check=set())
        section = manifest.get("trt")
        if not section or not section.get("engines"):
            raise ModelError(f"{self.export_dir} has no TensorRT engines; build them with "
                             f"sair-export CHECKPOINT -o {self.export_dir} --trt --force")
        check_engine_host(section, trt.__version__, gpu_info(device))
        self.cudart = _cudart()
        _check(self.cudart.cudaSetDevice(device))
        load_manifest(self.export_dir, check={e["file"] for e in section["engines"].values()})
        self.manifest = manifest
        self.config = SAIRConfig.from_dict(manifest["config"])
        self.precision = section.get("precision", "fp16")
        self.runtime_sizes = manifest.get("runtime", {})
        self.counters = Counters()
        self.query_chunk = int(self.runtime_sizes.get("chunk", GPU_QUERY_CHUNK))
        self.stream = _check(self.cudart.cudaStreamCreate())
        self.staging = PinnedStaging(self)
        self.pending: list = []
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engines = {name: _Engine(trt, self._runtime, self.export_dir / e["file"], self)
                        for name, e in section["engines"].items()}

    # ---- memory ----------------------------------------------------------------------------
    def synchronize(self) -> None:
        """Wait for the stream; staged copies and the host arrays engines read are released."""
        _check(self.cudart.cudaStreamSynchronize(self.stream))
        self.pending.clear()
        self.staging.used = 0

    def upload(self, array: np.ndarray) -> DeviceArray:
        with timed(self.counters):
            array = np.ascontiguousarray(array)
            self.counters.h2d_bytes += array.nbytes
            out = DeviceArray(self.cudart, self.stream, array.shape, array.dtype)
            ptr, staged = self.staging.take(array.nbytes)
            staged[:] = array.reshape(-1).view(np.uint8)
            kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            _check(self.cudart.cudaMemcpyAsync(out.ptr, ptr, array.nbytes, kind, self.stream))
            return out

    def download(self, handle: DeviceArray) -> np.ndarray:
        """Enqueue the copy after the work that makes ``handle``, then the one synchronisation."""
        with timed(self.counters):
            self.counters.d2h_bytes += handle.nbytes
            ptr, staged = self.staging.take(handle.nbytes)
            kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
            _check(self.cudart.cudaMemcpyAsync(ptr, handle.ptr, handle.nbytes, kind, self.stream))
            self.synchronize()
            return staged.view(handle.dtype).reshape(handle.shape).copy()

    def empty(self, rows: int) -> DeviceArray:
        return DeviceArray(self.cudart, self.stream, (rows, 3), np.float32)

    def nbytes(self, handle: DeviceArray) -> int:
        return handle.nbytes

    # ---- graphs ----------------------------------------------------------------------------
    def _engine(self, graph: str) -> _Engine:
        if graph not in self.engines:
            raise ModelError(f"this export has no TensorRT engine for {graph!r}: rebuild with "
                             f"sair-export --trt --force")
        return self.engines[graph]

    def run(self, graph: str, *inputs):
        with timed(self.counters):
            self.counters.count(graph)
            outs = self._engine(graph)([a for a in inputs if a is not None])
            return outs[0] if len(outs) == 1 else tuple(outs)

    def run_into(self, graph: str, out: DeviceArray, start: int, count: int, *inputs) -> None:
        with timed(self.counters):
            self.counters.count(graph)
            self._engine(graph)(list(inputs), out_address=out.ptr + start * 3 * 4)

    def close(self) -> None:
        self.synchronize()
        self.engines = {}
        self.staging.free()
