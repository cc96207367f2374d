"""Export a checkpoint to a directory: float32 graphs, optional float16 graphs and TensorRT
engines, the manifest, and an optional parity check. :mod:`.cli` is the command line over this."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from sair_deploy.errors import InputError, ModelError

from sair_deploy import manifest as mf
from .onnx import FP32_GRAPHS, OPSET, export_all, graph_io, save_model

# --check's images: a photo-sized one at scale 1 and a smaller one at scale 2 (height, width, scale)
REAL_CASES = ((384, 512, 1.0), (200, 256, 2.0))


def check_output_dir(out_dir: Path, force: bool) -> None:
    """Refuse, before any work, an ``out_dir`` we must not or cannot replace: an existing,
    non-empty folder without ``force``, with ``force`` one that is not an earlier export (its
    files would be deleted by the swap), a file, or a place where no folder can be created."""
    from sair_deploy.files import check_writable_dir

    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not force:
            raise InputError(f"{out_dir} already exists and is not empty; pass --force to overwrite it")
        if not (out_dir / mf.MANIFEST).is_file():
            raise InputError(f"{out_dir} is not empty and holds no {mf.MANIFEST}: --force replaces "
                             f"only an earlier export; choose an empty or new folder")
    parent = out_dir.absolute().parent
    while not parent.exists():
        parent = parent.parent
    check_writable_dir(parent, "folder")


def _recover(out_dir: Path) -> None:
    """Undo what a killed export left beside ``out_dir``: a previous export moved aside but not
    yet replaced goes back; unfinished new exports and replaced old ones are removed."""
    import shutil

    parent = out_dir.absolute().parent
    if not parent.is_dir():
        return
    olds = sorted(parent.glob(f".{out_dir.name}.old-*"))
    if olds and not out_dir.exists():
        os.rename(olds[-1], out_dir)
        olds = olds[:-1]
    for d in olds + sorted(parent.glob(f".{out_dir.name}.new-*")):
        shutil.rmtree(d, ignore_errors=True)


def export_checkpoint(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, fp16: bool = False,
                      trt: bool = False, force: bool = False, runtime: dict[str, int] | None = None,
                      workspace_mb: int = 4096, log: Callable[[str], Any] = print, int8: bool = False,
                      calib: str | os.PathLike | None = None, gate: bool = False,
                      gate_images: str | os.PathLike | None = None,
                      allow_failed_gate: bool = False, int8_query: str = "static") -> dict[str, Any]:
    """Write the export directory for ``checkpoint``; returns the manifest written.

    The export is written into a new folder beside ``out_dir`` and swapped in at the end, so a
    kill at any moment leaves the previous export (if any) intact. ``trt=True`` fails (nothing
    written) when TensorRT or a GPU is missing. ``int8``: also write int8 graphs
    (:mod:`.quantize`, calibrated on ``calib`` or the shipped training photos; the query graphs
    as ``int8_query`` says: ``static``, ``dynamic`` or ``float``) and gate them; a
    failing gate removes them and raises ModelError (after the rest is written) unless
    ``allow_failed_gate``. ``gate``: also gate bfloat16 (torch, on a CPU that has it) and record
    it in the checkpoint's metadata. Gates run on ``gate_images`` (:mod:`.gate`).
    """
    import shutil
    import tempfile

    from sair_deploy.files import signals_deferred
    from sair_deploy.model.checkpoint import load_checkpoint

    out_dir = Path(out_dir)
    _recover(out_dir)
    check_output_dir(out_dir, force)
    if trt:
        from .trt import TrtUnavailable, check_available

        try:
            check_available()
        except TrtUnavailable as exc:
            raise InputError(f"--trt: {exc}") from None
    model = load_checkpoint(checkpoint)
    out_dir.absolute().parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.new-", dir=out_dir.absolute().parent))
    try:
        what, refused = _export_into(model, checkpoint, new, fp16, trt, runtime, workspace_mb, log,
                                     int8, calib, gate, gate_images, allow_failed_gate, int8_query)
        os.chmod(new, 0o777 & ~_umask())
        old = new.parent / f".{out_dir.name}.old-{os.getpid()}"
        with signals_deferred():  # the two renames happen together or not at all (but SIGKILL)
            if out_dir.exists():
                os.rename(out_dir, old)
            else:
                old = None
            os.rename(new, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if new.exists():
            shutil.rmtree(new, ignore_errors=True)
    log(f"wrote {out_dir / mf.MANIFEST} ({what})")
    if refused:
        raise ModelError(refused)
    return mf.load_manifest(out_dir)


def _umask() -> int:
    u = os.umask(0)
    os.umask(u)
    return u


def _export_into(model, checkpoint: str | os.PathLike, out_dir: Path, fp16: bool, trt: bool,
                 runtime: dict[str, int] | None, workspace_mb: int, log: Callable[[str], Any],
                 int8: bool = False, calib=None, gate: bool = False, gate_images=None,
                 allow_failed_gate: bool = False, int8_query: str = "static") -> tuple[str, str | None]:
    """Write the graphs, engines and manifest of ``model`` into the (new, empty) ``out_dir``;
    returns a short description of what was written and the int8 gate's refusal (or None)."""
    from .fp16 import convert_to_fp16

    cfg = model.cfg
    runtime = {**mf.runtime_sizes(), **(runtime or {})}
    radius = cfg.app.receptive_radius()
    runtime.setdefault("overlap", radius + (-radius) % 4)

    protos = export_all(model, out_dir, log=log)
    graphs: dict[str, Any] = {}
    for name in mf.GRAPH_ORDER:
        if name not in protos:
            continue
        proto = protos[name]
        io = graph_io(name, cfg)
        files = {"fp32": save_model(proto, out_dir / f"{name}.onnx")}
        if fp16 and name in FP32_GRAPHS:
            files["fp16"] = files["fp32"]  # layout and classical graphs: no weights, kept float32
        elif fp16:
            log(f"converting {name} to float16")
            files["fp16"] = save_model(convert_to_fp16(proto, io.coordinate_inputs),
                                       out_dir / f"{name}.fp16.onnx")
        graphs[name] = {
            "inputs": [mf.value_info(v) for v in proto.graph.input],
            "outputs": [mf.value_info(v) for v in proto.graph.output],
            "coordinate_inputs": list(io.coordinate_inputs),
            "files": files,
        }

    manifest: dict[str, Any] = {
        "model": cfg.name,
        "config": cfg.to_dict(),
        "checkpoint": {"file": Path(checkpoint).name, "sha256": mf.sha256(checkpoint)},
        "opset": OPSET,
        "exporter": "torch.onnx.export(dynamo=True)",
        "versions": mf.package_versions(),
        "runtime": runtime,
        "graphs": graphs,
        "trt": None,
    }
    refused = None
    if int8 or gate:
        refused = _lower_precisions(checkpoint, out_dir, manifest, int8, gate, calib, gate_images,
                                    allow_failed_gate, log, int8_query)
    if trt:
        if int8:  # TensorRT's INT8 Q/DQ needs zero points of 0; these graphs' activations are not
            log("TensorRT engines are built from the float graphs: the int8 graphs use asymmetric "
                "activation ranges, which TensorRT's explicit INT8 does not take")
        manifest["trt"] = _build_trt(out_dir, cfg, graphs, "fp16" if fp16 else "fp32", runtime,
                                     workspace_mb, log)
    mf.write_manifest(out_dir, manifest)
    return f"{len(graphs)} graphs{', float16' if fp16 else ''}{', TensorRT engines' if manifest['trt'] else ''}", refused


def _lower_precisions(checkpoint, out_dir: Path, manifest: dict[str, Any], int8: bool, gate: bool,
                      calib, gate_images, allow_failed_gate: bool, log,
                      int8_query: str = "static") -> str | None:
    """int8 graphs and the accuracy gates (recorded in ``manifest["precision_gate"]``; bf16's also
    in the checkpoint). Returns the refusal message when int8 failed its gate (its graphs are
    then removed), else None."""
    from sair_deploy.backends.onnx_backend import OnnxBackend
    from sair_deploy.precision import cpu_supports_bf16

    from . import gate as gt
    from .quantize import write_int8_graphs

    cfg_graphs = manifest["graphs"]
    images, source = gt.gate_images(gate_images)
    if calib is not None and int8:
        held = Path(source).resolve() if Path(source).is_dir() else None
        c = Path(calib).resolve()
        if held is not None and (c == held or held in c.parents or c in held.parents):
            raise InputError(f"--calib {calib} overlaps the held-out gate images {source}: calibrate "
                             f"on training photos, never on the set that judges the result")
    gates: dict[str, Any] = {}
    if int8:
        mf.write_manifest(out_dir, manifest)  # the float32 graphs: calibration runs them
        from sair_deploy.model.config import SAIRConfig

        files = write_int8_graphs(out_dir, cfg_graphs, SAIRConfig.from_dict(manifest["config"]),
                                  Path(calib) if calib else None, query_mode=int8_query, log=log)
        for name, f in files.items():
            cfg_graphs[name]["files"]["int8"] = f
        mf.write_manifest(out_dir, manifest)
        log(f"gating int8 on {len(images)} held-out images ({source})")
        gates["int8"] = gt.run_gate("int8", OnnxBackend(out_dir, device="cpu", precision="fp32"),
                                    OnnxBackend(out_dir, device="cpu", precision="int8"), images, source)
        log(gt.gate_line("int8", gates["int8"]))
    if gate and cpu_supports_bf16():
        from sair_deploy.backends.torch_backend import TorchBackend
        from sair_deploy.model.checkpoint import load_checkpoint

        model = load_checkpoint(checkpoint)
        log(f"gating bf16 (torch) on {len(images)} held-out images ({source})")
        gates["bf16"] = gt.run_gate("bf16", TorchBackend(model), TorchBackend(model, precision="bf16"),
                                    images, source)
        log(gt.gate_line("bf16", gates["bf16"]))
        gt.record_in_checkpoint(checkpoint, {"bf16": gates["bf16"]})
        if "checkpoint" in manifest:  # the checkpoint's bytes changed with its metadata
            manifest["checkpoint"]["sha256"] = mf.sha256(checkpoint)
        log(f"recorded the bf16 gate in {checkpoint}'s metadata")
    elif gate:
        log("bf16 gate skipped: this CPU has no bfloat16 units (avx512_bf16 / amx_bf16)")
    manifest["precision_gate"] = gates
    if int8 and not gates["int8"]["passed"] and not allow_failed_gate:
        for name, g in cfg_graphs.items():
            f = g["files"].pop("int8")
            if f != g["files"]["fp32"]:
                for rel in f:
                    (out_dir / rel).unlink(missing_ok=True)
        return ("int8 failed its accuracy gate (" + "; ".join(gates["int8"]["failures"]) +
                "); its graphs were removed and the float32 export kept; pass "
                "--allow-failed-gate to keep them anyway")
    return None


def _build_trt(out_dir: Path, cfg, graphs: dict[str, Any], precision: str, runtime: dict[str, int],
               workspace_mb: int, log) -> dict[str, Any]:
    from sair_deploy.errors import ModelError

    from .trt import TrtUnavailable, build_engines

    sources = {name: g["files"][precision][0] for name, g in graphs.items()}
    try:
        return build_engines(out_dir, cfg, sources, precision, runtime, workspace_mb, log=log)
    except TrtUnavailable as exc:  # asked for explicitly: no engines is a failed export
        raise ModelError(f"--trt: no TensorRT engines were built ({exc}); nothing was written") from None


def run_checks(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, manifest: dict[str, Any],
               log: Callable[[str], Any] = print) -> bool:
    """Parity of everything in the export against torch; prints one line per comparison."""
    import importlib.util

    from sair_deploy.backends.onnx_backend import OnnxBackend
    from sair_deploy.model.checkpoint import load_checkpoint

    from . import parity

    model = load_checkpoint(checkpoint)
    diffs = []
    real = dict(cases=REAL_CASES, tile=256, chunk=8192)  # several tiles and query calls
    precisions = ["fp32"] + (["fp16"] if all("fp16" in g["files"] for g in manifest["graphs"].values()) else [])
    for precision in precisions:
        backend = OnnxBackend(out_dir, device="cpu", precision=precision)
        diffs += parity.graph_parity(model, backend)
        diffs += parity.image_parity(model, backend, **real)
    if manifest.get("trt"):
        from sair_deploy.backends.trt_backend import TrtBackend

        rt = manifest["runtime"]
        diffs += parity.image_parity(model, TrtBackend(out_dir), cases=REAL_CASES, tile=rt["tile"],
                                     chunk=rt["chunk"], label="trt",
                                     limits=(parity.FP16_MAX, parity.FP16_MEAN))
        if importlib.util.find_spec("polygraphy") is not None:
            diffs += parity.polygraphy_trt_vs_ort(out_dir, manifest)
        else:
            log("polygraphy is not installed: TensorRT vs ONNX Runtime comparison skipped")
    for d in diffs:
        log(d.line())
    return all(d.ok for d in diffs)
