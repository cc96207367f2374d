"""Loading a model: resolve what the user named (or the bundled demo model) to a backend."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .backends.base import Backend
from .errors import InputError, ModelError
from .inpainter import Inpainter

ASSETS = Path(__file__).parent / "assets"
DEFAULT_CHECKPOINT = ASSETS / "sair-small-demo.safetensors"
DEFAULT_EXPORT = ASSETS / "sair-small-demo-onnx"
BACKENDS = ("auto", "torch", "onnx", "trt")
PRECISIONS = ("auto", "fp32", "bf16", "int8", "fp16")


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def resolve_model(model: str | Path | None) -> Path:
    """The path of the model to run: what the user named, else the bundled demo model."""
    if model is not None:
        path = Path(model)
        if not path.exists():
            raise ModelError(f"model {path} does not exist (give a .safetensors checkpoint or an "
                             f"export directory from sair-export)")
        return path
    for candidate in (DEFAULT_EXPORT, DEFAULT_CHECKPOINT):
        if candidate.exists():
            return candidate
    raise ModelError("this install has no bundled model; pass --model CHECKPOINT_OR_EXPORT_DIR "
                     "(train one with sair-train)")


def load_backend(model: str | Path | None = None, backend: str = "auto", device: str = "auto",
                 precision: str = "auto") -> Backend:
    """A backend for ``model`` (a checkpoint file or an export directory).

    ``auto`` prefers TensorRT, then ONNX Runtime (CUDA, then CPU), then torch; ``device="auto"``
    uses a CUDA GPU when the backend can reach one. ``precision``: ``fp32``, ``bf16`` (torch on
    a CPU with bfloat16 units), ``int8`` (ONNX Runtime, an export written with ``--int8``),
    ``fp16`` (CUDA) or ``auto``: the fastest of these the device supports whose accuracy gate
    passed for the model (see :mod:`sair_deploy.precision`); the backend's ``precision`` says
    which ran.
    """
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"unknown device {device!r}; choose auto, cpu or cuda")
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    path = resolve_model(model)
    if model is None and backend == "torch" and DEFAULT_CHECKPOINT.exists():
        path = DEFAULT_CHECKPOINT
    if path.is_dir():
        if backend == "torch":
            raise InputError(f"{path} is an export directory; the torch backend needs a .safetensors "
                             f"checkpoint (or use --backend onnx)")
        if backend in ("trt", "auto") and device != "cpu" and (path / "trt").is_dir() and _has("tensorrt"):
            from .backends.trt_backend import TrtBackend
            return TrtBackend(path)
        if backend == "trt":
            raise InputError(f"--backend trt needs TensorRT engines in {path}/trt and the tensorrt "
                             f"package (sair-export --trt on the GPU host)")
        from .backends.onnx_backend import OnnxBackend
        return OnnxBackend(path, device=device, precision=precision)
    if backend in ("onnx", "trt"):
        raise InputError(f"{path} is a checkpoint; export it first (sair-export {path} -o DIR) to use "
                         f"--backend {backend}")
    if not _has("torch"):
        raise InputError("running a .safetensors checkpoint needs PyTorch: pip install "
                         "'sair-deploy[train]', or export the model to ONNX with sair-export")
    from .backends.torch_backend import TorchBackend
    if device == "auto":
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if precision == "int8":
        raise InputError(f"--precision int8 runs int8 ONNX graphs: export them with sair-export {path} "
                         f"-o DIR --int8 and pass --model DIR")
    if precision == "auto":
        from .precision import checkpoint_gates, cpu_supports_bf16, pick_precision

        precision = "fp32" if device != "cpu" else pick_precision(
            "auto", "torch", ("bf16",) if cpu_supports_bf16() else (), checkpoint_gates(path))
    return TorchBackend.from_checkpoint(path, device=device, precision=precision)


def load_inpainter(model: str | Path | None = None, backend: str = "auto", device: str = "auto",
                   precision: str = "auto", **options) -> Inpainter:
    """An :class:`Inpainter` ready for ``set_image`` (options go to :class:`Inpainter`; those left
    None take the sizes an export was built for, e.g. its TensorRT profiles, else the defaults).
    ``precision`` as in :func:`load_backend`; ``inp.backend.precision`` is what runs."""
    be = load_backend(model, backend, device, precision)
    sizes = getattr(be, "runtime_sizes", None) or {}  # TensorRT: what its profiles cover
    options = {k: v for k, v in options.items() if v is not None}
    for key in ("tile", "chunk"):
        if key in sizes and key not in options:
            options[key] = sizes[key]
    return Inpainter(be, **options)
