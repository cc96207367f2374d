"""TensorRT backend: runs the engines of a ``sair-export --trt`` directory (no torch).

Device memory and copies go through cuda-python's runtime bindings (``cuda.bindings.runtime``);
inputs and outputs are numpy arrays on the host. Engines are refused, with a one-line message,
when they were built with another TensorRT version or for another GPU.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, ModelError
from ..model.config import SAIRConfig


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


class DeviceBuffer:
    """A growable ``cudaMalloc`` allocation."""

    def __init__(self, cudart):
        self._cudart = cudart
        self.ptr = 0
        self.nbytes = 0

    def reserve(self, nbytes: int) -> int:
        if nbytes > self.nbytes:
            self.free()
            self.ptr = int(_check(self._cudart.cudaMalloc(max(nbytes, 256))))
            self.nbytes = max(nbytes, 256)
        return self.ptr

    def free(self) -> None:
        if self.ptr:
            _check(self._cudart.cudaFree(self.ptr))
            self.ptr, self.nbytes = 0, 0


class CudaCopier:
    """Host <-> device copies on one CUDA stream."""

    def __init__(self):
        self.cudart = _cudart()
        self.stream = _check(self.cudart.cudaStreamCreate())

    @property
    def handle(self) -> int:
        return int(self.stream)

    def to_device(self, buf: DeviceBuffer, array: np.ndarray) -> int:
        ptr = buf.reserve(array.nbytes)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        _check(self.cudart.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, kind, self.stream))
        return ptr

    def to_host(self, buf: DeviceBuffer, out: np.ndarray) -> np.ndarray:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(self.cudart.cudaMemcpyAsync(out.ctypes.data, buf.ptr, out.nbytes, kind, self.stream))
        return out

    def synchronize(self) -> None:
        _check(self.cudart.cudaStreamSynchronize(self.stream))


def _np_dtype(trt, dtype) -> np.dtype:
    try:
        return np.dtype(trt.nptype(dtype))
    except (AttributeError, TypeError):
        names = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64,
                 "BOOL": np.bool_, "INT8": np.int8, "UINT8": np.uint8}
        return np.dtype(names[dtype.name])


class _Engine:
    """One deserialized engine with its execution context and buffers."""

    def __init__(self, trt, runtime, path: Path, copier: CudaCopier):
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ModelError(f"TensorRT could not load {path} (built by another TensorRT or GPU?); "
                             f"rebuild it with sair-export --trt --force")
        self.engine = engine
        self.context = engine.create_execution_context()
        self.copier = copier
        self.inputs, self.outputs = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            (self.inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else self.outputs).append(name)
        self.dtypes = {n: _np_dtype(trt, engine.get_tensor_dtype(n)) for n in self.inputs + self.outputs}
        self.buffers = {n: DeviceBuffer(copier.cudart) for n in self.inputs + self.outputs}

    def check_shape(self, name: str, shape: tuple[int, ...]) -> None:
        if -1 not in tuple(self.engine.get_tensor_shape(name)):
            return
        lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
        if any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
            raise InputError(f"input {name} of shape {tuple(shape)} is outside the TensorRT engine's "
                             f"profile ({tuple(lo)} to {tuple(hi)}); use the tile/block/chunk sizes "
                             f"the engines were built for (see manifest.json) or rebuild them")

    def __call__(self, **feeds: np.ndarray) -> np.ndarray:
        ctx, cp = self.context, self.copier
        hosts = []  # keep host arrays alive until the copies are done
        for name in self.inputs:
            a = np.ascontiguousarray(feeds[name], dtype=self.dtypes[name])
            self.check_shape(name, a.shape)
            hosts.append(a)
            ctx.set_input_shape(name, a.shape)
            ctx.set_tensor_address(name, cp.to_device(self.buffers[name], a))
        outs = []
        for name in self.outputs:
            shape = tuple(ctx.get_tensor_shape(name))
            out = np.empty(shape, dtype=self.dtypes[name])
            ctx.set_tensor_address(name, self.buffers[name].reserve(out.nbytes))
            outs.append(out)
        if not ctx.execute_async_v3(cp.handle):
            raise RuntimeError("TensorRT execution failed (see its log)")
        for name, out in zip(self.outputs, outs):
            cp.to_host(self.buffers[name], out)
        cp.synchronize()
        return outs[0].astype(np.float32, copy=False)

    def free(self) -> None:
        for b in self.buffers.values():
            b.free()


class TrtBackend:
    """The :class:`~sair_deploy.backends.base.Backend` interface over TensorRT engines."""

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
        _check(_cudart().cudaSetDevice(device))
        load_manifest(self.export_dir, check={e["file"] for e in section["engines"].values()})
        self.manifest = manifest
        self.config = SAIRConfig.from_dict(manifest["config"])
        self.runtime_sizes = manifest.get("runtime", {})
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._copier = CudaCopier()
        self.engines = {name: _Engine(trt, self._runtime, self.export_dir / e["file"], self._copier)
                        for name, e in section["engines"].items()}

    def semantic(self, sem_image: np.ndarray, sem_valid: np.ndarray) -> np.ndarray:
        return self.engines["semantic"](sem_image=sem_image, sem_valid=sem_valid)

    def fill(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.engines["fill"](image=image, mask=mask)

    def appearance(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.engines["appearance"](image=image, mask=mask)

    def precompute(self, app: np.ndarray, sem_pre: np.ndarray | None = None,
                   centres: np.ndarray | None = None, pixel_cell: np.ndarray | None = None) -> np.ndarray:
        if not self.config.use_semantic:
            return self.engines["precompute"](app=app)
        return self.engines["precompute"](app=app, sem_pre=sem_pre, centres=centres,
                                          pixel_cell=pixel_cell)

    def query(self, air_pre: np.ndarray, grid: np.ndarray, coord: np.ndarray,
              cell: np.ndarray) -> np.ndarray:
        return self.engines["query"](air_pre=air_pre, grid=grid, coord=coord, cell=cell)

    def close(self) -> None:
        for e in self.engines.values():
            e.free()
