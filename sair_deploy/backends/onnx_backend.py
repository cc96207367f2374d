"""ONNX Runtime backend: runs the graphs of a ``sair-export`` directory with numpy only (no torch).

CUDA is used when onnxruntime-gpu is installed and sees a GPU, otherwise the CPU. The export's
manifest is read first; the hashes of the graph files this backend loads are checked.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError, ModelError
from ..model.config import SAIRConfig
from .base import CPU_QUERY_CHUNK, query_in_pieces

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"


def available_providers() -> list[str]:
    import onnxruntime as ort

    return ort.get_available_providers()


class OnnxBackend:
    """The :class:`~sair_deploy.backends.base.Backend` interface over ONNX Runtime sessions.

    ``device``: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``.
    ``precision``: ``"fp32"``, ``"fp16"`` (needs ``sair-export --fp16``), ``"int8"`` (needs
    ``sair-export --int8``) or ``"auto"`` (fp16 on CUDA when exported; on the CPU int8 when
    exported and its accuracy gate passed; fp32 otherwise). ``threads``: intra-op threads on CPU
    (0 = all cores).
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
        if threads:
            opts.intra_op_num_threads = threads
        providers = [_CUDA, _CPU] if use_cuda else [_CPU]
        self.sessions = {}
        self._inputs: dict[str, list[str]] = {}
        for name, rel in files.items():
            try:
                sess = ort.InferenceSession(str(self.export_dir / rel), opts, providers=providers)
            except Exception as exc:  # ORT raises its own exception types
                raise ModelError(f"ONNX Runtime cannot load {self.export_dir / rel}: "
                                 f"{str(exc).splitlines()[0][:200]}") from None
            self.sessions[name] = sess
            self._inputs[name] = [i.name for i in sess.get_inputs()]
        if use_cuda and any(s.get_providers()[0] != _CUDA for s in self.sessions.values()):
            if device == "cuda":
                raise InputError("ONNX Runtime could not start its CUDA provider (see its log); "
                                 "check the CUDA/cuDNN install or use --device cpu")
            self.name = "onnx-cpu"  # onnxruntime-gpu without a usable GPU falls back to the CPU
        self.query_piece = CPU_QUERY_CHUNK if self.name == "onnx-cpu" else None

    def _run(self, name: str, *arrays: np.ndarray | None) -> np.ndarray:
        names = self._inputs[name]
        feeds = {k: np.ascontiguousarray(a, dtype=np.float32) for k, a in zip(names, arrays)}
        if len(feeds) != len(names):
            raise InputError(f"graph {name} takes {names}, got {len(feeds)} arrays")
        return self.sessions[name].run(None, feeds)[0]

    def semantic(self, sem_image: np.ndarray, sem_valid: np.ndarray) -> np.ndarray:
        return self._run("semantic", sem_image, sem_valid)

    def fill(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._run("fill", image, mask)

    def appearance(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._run("appearance", image, mask)

    def precompute(self, app: np.ndarray, sem_pre: np.ndarray | None = None,
                   centres: np.ndarray | None = None, pixel_cell: np.ndarray | None = None) -> np.ndarray:
        if not self.config.use_semantic:
            return self._run("precompute", app)
        return self._run("precompute", app, sem_pre, centres, pixel_cell)

    def query(self, air_pre: np.ndarray, grid: np.ndarray, coord: np.ndarray,
              cell: np.ndarray) -> np.ndarray:
        run = lambda *a: self._run("query", *a)  # noqa: E731
        return query_in_pieces(run, air_pre, grid, coord, cell, self.query_piece)
