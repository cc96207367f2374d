"""The export manifest: ``manifest.json`` beside the graphs, describing and fingerprinting them.

It records the model config, every graph's inputs and outputs (names, shapes, dtypes) and files,
the opset, the versions of the packages that produced it, the runtime's tile/block/chunk sizes
(the TensorRT profiles are built for them) and the sha256 of every file. The runtime backends
read it with :func:`load_manifest`, which checks the format and the hashes of the files they use.
No torch here: the torch-free runtime imports this module.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .errors import ModelError
from .files import atomic_write

MANIFEST = "manifest.json"
FORMAT = "sair-export"
FORMAT_VERSION = 3  # 2: a region vector for prepare, semantic, composite; 3: air_pre as rows (channels last)
GRAPH_ORDER = ("prepare", "semantic", "fill", "tile", "query", "query_holes", "composite", "assemble")


def sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_versions(names: tuple[str, ...] = ("sair-deploy", "torch", "onnx", "onnxscript",
                                                "onnxruntime", "onnxruntime-gpu", "numpy")) -> dict[str, str]:
    """Installed versions of ``names`` (packages that are absent are left out)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            pass
    return out


def runtime_sizes() -> dict[str, int]:
    """The runtime's default sizes (TensorRT profiles are built for them)."""
    from .tiling import RuntimePlan

    return RuntimePlan().to_dict()


def value_info(vi) -> dict[str, Any]:
    """``{"name", "dtype", "shape"}`` of an ONNX ``ValueInfoProto`` (symbolic dims as strings)."""
    from onnx import helper

    t = vi.type.tensor_type
    shape = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
    return {"name": vi.name, "dtype": helper.tensor_dtype_to_np_dtype(t.elem_type).name,
            "shape": shape}


def write_manifest(out_dir: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Hash every file the manifest lists under ``files`` and write ``manifest.json`` atomically."""
    out_dir = Path(out_dir)
    manifest = dict(manifest)
    manifest["format"] = FORMAT
    manifest["format_version"] = FORMAT_VERSION
    manifest["sha256"] = {f: sha256(out_dir / f) for f in sorted(manifest_files(manifest))}
    path = out_dir / MANIFEST
    text = json.dumps(manifest, indent=2, sort_keys=False) + "\n"

    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path


def manifest_files(manifest: dict[str, Any]) -> set[str]:
    """Every file a manifest refers to (graphs of each precision, external data, engines)."""
    files: set[str] = set()
    for g in manifest.get("graphs", {}).values():
        for rel in g.get("files", {}).values():
            files.update(rel if isinstance(rel, list) else [rel])
    for e in (manifest.get("trt") or {}).get("engines", {}).values():
        files.add(e["file"])
    if (manifest.get("trt") or {}).get("timing_cache"):
        files.add(manifest["trt"]["timing_cache"])
    return files


def load_manifest(export_dir: str | os.PathLike, check: set[str] | None = None) -> dict[str, Any]:
    """Read and validate ``export_dir/manifest.json``.

    Verifies the format version and the sha256 of the files in ``check`` (all listed files when
    None). Raises :class:`ModelError` with a one-line message on any mismatch.
    """
    export_dir = Path(export_dir)
    path = export_dir / MANIFEST
    if not path.is_file():
        raise ModelError(f"{export_dir} has no {MANIFEST}: not a sair-export directory "
                         f"(run sair-export CHECKPOINT -o {export_dir})")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is not valid JSON ({exc}); re-run sair-export") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelError(f"{path} is not a sair-export manifest")
    version = manifest.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise ModelError(f"{path} has format version {version!r}, this "
                         f"sair-deploy reads version {FORMAT_VERSION}; re-export with this release")
    _check_structure(manifest, path)
    hashes = manifest["sha256"]
    for rel in sorted(manifest_files(manifest) if check is None else check):
        f = export_dir / rel
        if not f.is_file():
            raise ModelError(f"{f} is missing from the export (listed in {MANIFEST}); re-run sair-export")
        if rel not in hashes:
            raise ModelError(f"{rel} has no sha256 in {path}; re-run sair-export")
        if sha256(f) != hashes[rel]:
            raise ModelError(f"{f} does not match the sha256 in {MANIFEST} (modified or corrupt); "
                             f"re-run sair-export")
    return manifest


def _check_structure(manifest: dict[str, Any], path: Path) -> None:
    """ModelError (one line) unless the manifest has what the runtime reads: a valid config,
    graphs with files, hashes and sizes of the right types."""
    from .model.config import SAIRConfig  # pure dataclasses: no torch

    def bad(what: str) -> ModelError:
        return ModelError(f"{path} is malformed: {what}; re-run sair-export")

    try:
        SAIRConfig.from_dict(manifest.get("config"))
    except ValueError as exc:
        raise ModelError(f"{path} has a bad model config: {str(exc).splitlines()[0][:160]}; "
                         f"re-export with this release") from None
    graphs = manifest.get("graphs")
    if not isinstance(graphs, dict) or not graphs:
        raise bad("no 'graphs' section")
    for name, g in graphs.items():
        files = g.get("files") if isinstance(g, dict) else None
        if not isinstance(files, dict) or not files:
            raise bad(f"graph {name!r} lists no files")
        for f in files.values():
            if not (isinstance(f, str) or (isinstance(f, list) and f and all(isinstance(x, str) for x in f))):
                raise bad(f"graph {name!r} has a file entry that is not a path")
    if not isinstance(manifest.get("sha256"), dict):
        raise bad("no 'sha256' section")
    runtime = manifest.get("runtime", {})
    if not isinstance(runtime, dict) or not all(type(v) is int and v >= 0 for v in runtime.values()):
        raise bad("'runtime' sizes are not non-negative integers")
    trt = manifest.get("trt")
    if trt is not None:
        engines = trt.get("engines") if isinstance(trt, dict) else None
        if not isinstance(engines, dict) or not all(isinstance(e, dict) and isinstance(e.get("file"), str)
                                                    for e in engines.values()):
            raise bad("the 'trt' section has no valid 'engines'")


def graph_files(manifest: dict[str, Any], precision: str) -> dict[str, str]:
    """``{graph: model file}`` for ``precision`` (``fp32``/``fp16``/``int8``); ModelError if absent."""
    out = {}
    for name, g in manifest["graphs"].items():
        f = g.get("files", {}).get(precision)
        if f is None:
            raise ModelError(f"the export has no {precision} graphs (re-export with "
                             f"{'--' + precision if precision in ('fp16', 'int8') else 'this release'})")
        out[name] = f[0] if isinstance(f, list) else f
    return out


def file_set(manifest: dict[str, Any], precision: str) -> set[str]:
    """Every file (with external data) that the ``precision`` graphs need."""
    out: set[str] = set()
    for g in manifest["graphs"].values():
        f = g.get("files", {}).get(precision)
        if f is not None:
            out.update(f if isinstance(f, list) else [f])
    return out
