"""Parity of exported graphs against PyTorch: per graph and on final inpainted images.

Tolerances (the issue's): ONNX Runtime float32 vs torch float32, max abs <= 1e-4 on every graph
output and on images in [0, 1]; float16 graphs vs torch float32 on images, mean abs <= 1e-2 and
max abs <= 5e-2 (per-graph float16 differences are reported, not judged: their scale is the
feature's). TensorRT is compared with ONNX Runtime through Polygraphy's comparator when present.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FP32_MAX = 1e-4
FP16_MEAN = 1e-2
FP16_MAX = 5e-2


@dataclass(frozen=True)
class Diff:
    """One comparison: what was compared, the measured differences and the limits (None: report)."""

    what: str
    precision: str
    max_abs: float
    mean_abs: float
    limit_max: float | None = None
    limit_mean: float | None = None

    @property
    def ok(self) -> bool:
        return ((self.limit_max is None or self.max_abs <= self.limit_max)
                and (self.limit_mean is None or self.mean_abs <= self.limit_mean))

    def line(self) -> str:
        lim = []
        if self.limit_max is not None:
            lim.append(f"max<={self.limit_max:g}")
        if self.limit_mean is not None:
            lim.append(f"mean<={self.limit_mean:g}")
        verdict = ("ok" if self.ok else "FAIL") if lim else "info"
        return (f"{self.what:<34} {self.precision:<5} max {self.max_abs:.3e}  mean {self.mean_abs:.3e}"
                f"  [{', '.join(lim) or 'reported'}] {verdict}")


def _diff(what: str, precision: str, a: np.ndarray, b: np.ndarray, limit_max=None, limit_mean=None) -> Diff:
    if a.shape != b.shape:
        raise AssertionError(f"{what}: shape {a.shape} vs {b.shape}")
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return Diff(what, precision, float(d.max()), float(d.mean()), limit_max, limit_mean)


def cut_banded_rows(air_pre: np.ndarray, kh: int) -> np.ndarray:
    """An exported tile's ``air_pre`` without the rows past ``kh`` that round it up to whole bands
    of its semantic loop (never read); more rows than that is a mismatch."""
    from sair_deploy.model.bands import banded_rows

    if air_pre.shape[1] != banded_rows(kh):
        raise AssertionError(f"air_pre has {air_pre.shape[1]} rows for a {kh}-row window")
    return air_pre[:, :kh]


def graph_parity(model, backend, sizes: tuple[int, ...] = (1, 2)) -> list[Diff]:
    """Every graph of ``backend`` vs the torch graphs of ``model`` on random inputs of ``sizes``
    (through the backend's own upload/run/download, as the runtime calls it)."""
    import torch

    from sair_deploy.model.graphs import PLAN_INPUTS, build_graphs

    from .onnx import graph_io, sample_inputs

    precision = getattr(backend, "precision", "fp32")
    graphs = build_graphs(model)
    out = []
    for name, module in graphs.items():
        io = graph_io(name, model.cfg)
        for size in sizes:
            inputs = sample_inputs(name, model.cfg, size=size)
            names = [k for k in io.inputs if k in inputs]
            with torch.inference_mode():
                ref = module(*[inputs[k] for k in names])
            ref = ref if isinstance(ref, tuple) else (ref,)
            args = [inputs[k].numpy() if k in PLAN_INPUTS else backend.upload(inputs[k].numpy())
                    for k in names]
            got = backend.run(name, *args)
            got = got if isinstance(got, tuple) else (got,)
            lim = FP32_MAX if precision == "fp32" else None
            first = inputs[names[0]]
            shape = "x".join(str(d) for d in first.shape[1:])
            for o, r, g in zip(io.outputs, ref, got):
                g = backend.download(g).astype(np.float32)
                if o == "air_pre" and g.shape[1] > r.shape[1]:
                    g = cut_banded_rows(g, r.shape[1])
                out.append(_diff(f"{name}.{o} {shape}", precision, r.float().numpy(), g, lim))
    return out


def synthetic_case(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random image with holes in the interior, on the borders and in a corner."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    image = np.stack([0.5 + 0.4 * np.sin(6 * xx + 2 * c + rng.random()) * np.cos(5 * yy - c)
                      for c in range(3)], axis=-1)
    image = np.clip(image + 0.05 * rng.random(image.shape), 0, 1).astype(np.float32)
    mask = rng.random((height, width)) < 0.15
    mask[height // 3: height // 2, width // 4: width // 2] = True
    mask[:4, :6] = True
    mask[-3:, :] = True
    return image, mask


def image_parity(model, backend, cases=((52, 44, 1.0), (40, 60, 1.7)), tile: int = 32,
                 chunk: int = 97, limits: tuple[float | None, float | None] | None = None,
                 label: str | None = None) -> list[Diff]:
    """Final images (float, before the 8-bit step) from ``backend`` vs the torch backend through
    the same :class:`Inpainter`. Small tiles and chunks by default so tile edges and chunking are
    exercised."""
    from sair_deploy.backends.torch_backend import TorchBackend
    from sair_deploy.inpainter import Inpainter

    precision = getattr(backend, "precision", "fp32")
    if limits is None:
        limits = (FP32_MAX, None) if precision == "fp32" else (FP16_MAX, FP16_MEAN)
    ref_backend = TorchBackend(model)
    out = []
    for i, (h, w, scale) in enumerate(cases):
        image, mask = synthetic_case(h, w, seed=i)
        results = []
        for b in (ref_backend, backend):
            inp = Inpainter(b, tile=tile, chunk=chunk)
            inp.set_image(image, mask)
            results.append(inp.inpaint(scale, dtype=np.float32))
        ref = results[0] if scale != 1.0 else results[0][mask]
        unclipped = float(np.mean((ref > 0) & (ref < 1)))  # clipped pixels compare nothing
        out.append(_diff(f"image {w}x{h} x{scale:g} ({unclipped:.0%} in (0,1))"
                         + (f" {label}" if label else ""), precision, results[0], results[1], *limits))
    return out


def polygraphy_trt_vs_ort(export_dir: str | os.PathLike, manifest: dict, sizes: tuple[int, ...] = (1, 2)) -> list[Diff]:
    """Each TensorRT engine vs ONNX Runtime on its source graph, through Polygraphy's comparator.

    Raises ImportError when polygraphy or tensorrt is missing.
    """
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner
    from polygraphy.comparator import Comparator, CompareFunc

    from sair_deploy.model.config import SAIRConfig

    from .onnx import graph_io, sample_inputs

    export_dir = Path(export_dir)
    cfg = SAIRConfig.from_dict(manifest["config"])
    section = manifest["trt"]
    out = []
    for name, eng in section["engines"].items():
        io = graph_io(name, cfg)
        feeds = []
        for size in sizes:
            inputs = sample_inputs(name, cfg, size=size)
            feeds.append({k: inputs[k].numpy() for k in io.inputs if k in inputs})
        runners = [
            OnnxrtRunner(SessionFromOnnx(str(export_dir / manifest["graphs"][name]["files"]["fp32"][0]),
                                         providers=["CPUExecutionProvider"]), name="onnxrt"),
            TrtRunner(EngineFromBytes((export_dir / eng["file"]).read_bytes()), name="trt"),
        ]
        results = Comparator.run(runners, data_loader=feeds)
        accurate = Comparator.compare_accuracy(
            results, compare_func=CompareFunc.simple(atol=FP16_MAX, rtol=0.0, check_error_stat="max"))
        precision = section.get("precision", "?")
        for a, b in zip(results[0][1], results[1][1]):
            out.append(_diff(f"trt-vs-ort {name}", precision, a[io.outputs[0]], b[io.outputs[0]],
                             FP16_MAX, FP16_MEAN))
        if not bool(accurate):
            out.append(Diff(f"polygraphy {name}", precision, float("inf"), float("inf"), FP16_MAX))
    return out
