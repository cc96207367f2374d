"""A stand-in for TensorRT and CUDA that enforces what they enforce, for the TensorRT backend's
real call path on a machine without either (tests/test_trt_runtime.py).

* ``FakeCudart``: cuda-python's runtime calls the backend makes. "Device" memory is host memory
  at real addresses (the engines read and write it), but every allocation is recorded, so the
  engines can insist that device inputs live in device allocations and shape tensors on the
  host; copies, kinds and stream synchronisations are counted.
* ``fake_tensorrt``: the builder (parse, profiles: shape ranges and shape-tensor value ranges,
  serialise) and the runtime (deserialise, execution contexts). An engine runs its ONNX graph
  with ONNX Runtime on the bound addresses; an input shape or shape-tensor value outside the
  engine's profile, an input of another dtype, an unbound input or a shape tensor given in device
  memory fails execution, as TensorRT fails it.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import json
import types
from pathlib import Path

import numpy as np
import onnx

from sair_deploy.model.graphs import PLAN_INPUTS

_DTYPES = {onnx.TensorProto.FLOAT: "FLOAT", onnx.TensorProto.UINT8: "UINT8",
           onnx.TensorProto.INT32: "INT32", onnx.TensorProto.INT64: "INT64",
           onnx.TensorProto.FLOAT16: "HALF"}
_NP = {"FLOAT": np.float32, "UINT8": np.uint8, "INT32": np.int32, "INT64": np.int64, "HALF": np.float16}


def _view(ptr: int, shape, dtype) -> np.ndarray:
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.ctypeslib.as_array((ctypes.c_uint8 * max(n, 1)).from_address(ptr))[:n]
    return raw.view(dtype).reshape(shape)


class FakeCudart:
    """The cuda-python runtime calls of the TensorRT backend, over host memory."""

    def __init__(self):
        self.device: dict[int, np.ndarray] = {}  # base address -> allocation
        self.host: dict[int, np.ndarray] = {}
        self.copies = {"h2d": 0, "d2h": 0}
        self.syncs = 0
        self.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice="h2d",
                                                    cudaMemcpyDeviceToHost="d2h")

    def on_device(self, ptr: int, nbytes: int = 1) -> bool:
        return any(b <= ptr and ptr + nbytes <= b + a.nbytes for b, a in self.device.items())

    def cudaSetDevice(self, device):
        return (0,)

    def cudaStreamCreate(self):
        return (0, 7)

    def cudaStreamSynchronize(self, stream):
        self.syncs += 1
        return (0,)

    def cudaMallocAsync(self, size, stream):
        a = np.zeros(int(size), np.uint8)
        self.device[a.ctypes.data] = a
        return (0, a.ctypes.data)

    def cudaFreeAsync(self, ptr, stream):
        self.device.pop(int(ptr), None)
        return (0,)

    def cudaMallocHost(self, size):
        a = np.zeros(int(size), np.uint8)
        self.host[a.ctypes.data] = a
        return (0, a.ctypes.data)

    def cudaFreeHost(self, ptr):
        self.host.pop(int(ptr), None)
        return (0,)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        if kind == "h2d":
            assert self.on_device(dst, nbytes), "host-to-device copy into memory that is not device memory"
        else:
            assert self.on_device(src, nbytes), "device-to-host copy from memory that is not device memory"
        ctypes.memmove(int(dst), int(src), int(nbytes))
        self.copies[kind] += 1
        return (0,)


class _Engine:
    """A 'serialised engine': its ONNX graph run by ONNX Runtime, with TensorRT's checks."""

    def __init__(self, trt, blob: dict):
        import onnxruntime as ort

        self.trt, self.blob = trt, blob
        model = onnx.load(blob["onnx"])
        self.session = ort.InferenceSession(blob["onnx"], providers=["CPUExecutionProvider"])
        io = [(v, "INPUT") for v in model.graph.input] + [(v, "OUTPUT") for v in model.graph.output]
        self.names = [v.name for v, _ in io]
        self.modes = {v.name: m for v, m in io}
        self.dtypes = {v.name: _DTYPES[v.type.tensor_type.elem_type] for v, _ in io}
        self.shapes = {v.name: tuple(d.dim_value if d.HasField("dim_value") else -1
                                     for d in v.type.tensor_type.shape.dim) for v, _ in io}

    # the ICudaEngine API the backend uses
    @property
    def num_io_tensors(self):
        return len(self.names)

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return getattr(self.trt.TensorIOMode, self.modes[name])

    def get_tensor_dtype(self, name):
        return types.SimpleNamespace(name=self.dtypes[name])

    def get_tensor_shape(self, name):
        return self.shapes[name]

    def get_tensor_profile_shape(self, name, profile):
        return self.blob["profile"][name]

    def is_shape_inference_io(self, name):
        return name in PLAN_INPUTS

    def get_tensor_profile_values(self, profile, name):
        return self.blob["values"][name]

    def create_execution_context(self):
        return _Context(self)


class _Context:
    def __init__(self, engine: _Engine):
        self.e, self.shape, self.address, self.bad = engine, {}, {}, []
        self.trt = engine.trt

    def set_input_shape(self, name, shape):
        shape = tuple(int(s) for s in shape)
        if name in self.e.blob["profile"]:
            lo, _, hi = self.e.blob["profile"][name]
            if len(shape) != len(lo) or any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
                self.bad.append(f"{name} shape {shape} outside the profile")
                return False
        self.shape[name] = shape
        self._outputs = None
        return True

    def set_tensor_address(self, name, ptr):
        self.address[name] = int(ptr)
        self._outputs = None
        return True

    def _inputs(self) -> dict[str, np.ndarray]:
        feeds = {}
        cudart = self.trt.cudart
        for name in (n for n in self.e.names if self.e.modes[n] == "INPUT"):
            if name not in self.address or name not in self.shape:
                raise RuntimeError(f"input {name} is not bound")
            dtype = _NP[self.e.dtypes[name]]
            nbytes = int(np.prod(self.shape[name])) * np.dtype(dtype).itemsize
            on_device = cudart.on_device(self.address[name], max(nbytes, 1))
            if self.e.is_shape_inference_io(name) == on_device:
                raise RuntimeError(f"{name}: shape tensors live in host memory, other inputs on the device")
            feeds[name] = _view(self.address[name], self.shape[name], dtype).copy()
            if name in self.e.blob["values"]:
                lo, _, hi = self.e.blob["values"][name]
                if any(v < a or v > b for v, a, b in zip(feeds[name].tolist(), lo, hi)):
                    raise RuntimeError(f"{name} values {feeds[name].tolist()} outside the profile")
        return feeds

    def get_tensor_shape(self, name):
        if self.e.modes[name] == "INPUT":
            return self.shape[name]
        if self._outputs is None:
            self._outputs = dict(zip([o.name for o in self.e.session.get_outputs()],
                                     self.e.session.run(None, self._inputs())))
        return self._outputs[name].shape

    def execute_async_v3(self, stream):
        if self.bad:
            raise RuntimeError("; ".join(self.bad))
        self.trt.executions.append(self.e.blob["name"])
        feeds = self._inputs()
        outs = dict(zip([o.name for o in self.e.session.get_outputs()], self.e.session.run(None, feeds)))
        for name, arr in outs.items():
            if not self.trt.cudart.on_device(self.address[name], arr.nbytes):
                raise RuntimeError(f"output {name} is not bound to device memory")
            out = _view(self.address[name], arr.shape, _NP[self.e.dtypes[name]])
            out[...] = arr
        return True


def fake_tensorrt(cudart: FakeCudart, version: str = "10.13.0.35") -> types.ModuleType:
    """The tensorrt module's builder and runtime, enough for build_engines and TrtBackend."""
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__version__ = version
    trt.cudart = cudart
    trt.executions = []
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Tensor:
        def __init__(self, vi):
            self.name = vi.name
            self.shape = tuple(d.dim_value if d.HasField("dim_value") else -1
                               for d in vi.type.tensor_type.shape.dim)
            self.is_shape_tensor = vi.name in PLAN_INPUTS

    class Network:
        def __init__(self):
            self.inputs, self.path = [], None

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

    class Parser:
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse_from_file(self, path):
            self.network.inputs = [Tensor(v) for v in onnx.load(path).graph.input]
            self.network.path = str(path)
            return True

    class Profile:
        def __init__(self):
            self.shapes, self.values = {}, {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = [list(lo), list(opt), list(hi)]

        def set_shape_input(self, name, lo, opt, hi):
            self.values[name] = [list(lo), list(opt), list(hi)]

    class Config:
        profile = None

        def set_memory_pool_limit(self, pool, size):
            pass

        def create_timing_cache(self, data):
            return types.SimpleNamespace(serialize=lambda: bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache

        def get_timing_cache(self):
            return self.cache

        def add_optimization_profile(self, profile):
            self.profile = profile

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            for t in network.inputs:  # TensorRT refuses a dynamic input without a profile
                if any(d < 0 for d in t.shape) and t.name not in config.profile.shapes:
                    return None
            return json.dumps({"onnx": network.path, "name": Path(network.path).stem.split(".")[0],
                               "profile": config.profile.shapes,
                               "values": config.profile.values}).encode()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return _Engine(trt, json.loads(bytes(data)))

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, Parser, Runtime
    return trt
