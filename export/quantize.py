"""int8 graphs for ONNX Runtime's CPU provider: ``sair-export --int8``.

Static quantization in QDQ form (explicit QuantizeLinear/DequantizeLinear pairs): weights int8
per output channel (symmetric), activations int8 with asymmetric ranges (TensorRT's explicit INT8
needs zero points of 0, so ``ActivationSymmetric`` would be the switch for engines built from
these graphs; the gate was measured on the asymmetric ones)
calibrated (MinMax) on the float32 export's own intermediate inputs while it inpaints calibration
photos: the training photos shipped for it, or ``--calib DIR``; never the held-out set the
accuracy gate uses.

Only convolutions and matrix products are quantized. Kept float32: everything else
(normalisation, softmax, pooling, gathers), every product that takes a coordinate-derived input
(the ``rel @ W_rel`` and ``cell @ W_cell`` parts of the MLPs' first layers, found by a taint from
the graph's coordinate inputs), the final RGB layer (the query graph's last product) and the
classical fill graph (divisions over masked sums).

:func:`quantize_query_dynamic` is the alternative tried for the query MLP: dynamic quantization
(activation ranges per call, no calibration). ``bench/onnx_speed.py --int8-variants`` compares
both on whole images; :data:`QUERY_MODE` is the default. ``float`` keeps the query graphs float32:
for the bundled model's 128-wide MLP the QDQ query graphs were slower than float32 on whole
images (512² scale 2: 6.00 s against 5.31 s with only the tile graph int8; one run).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from sair_deploy.errors import InputError

QUANT_OPS = ("Conv", "MatMul", "Gemm")
KEPT_FP32_GRAPHS = frozenset({"fill"})  # classical, division-heavy, no weights
QUERY_MODE = "static"  # "static" (QDQ), "dynamic" or "float" (kept float32) for the query graphs
CALIB_SIDE = 256  # calibration photos are resized to at most this side (ranges, not detail)
MAX_SAMPLES = 48  # calibration inputs kept per graph


def _sources(calib: Path | None) -> list[Path]:
    """Calibration photos: ``calib`` (a folder) or the shipped training photos."""
    exts = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
    if calib is not None:
        if not calib.is_dir():
            raise InputError(f"--calib {calib} is not a folder of photos")
        files = sorted(p for p in calib.rglob("*") if p.suffix.lower() in exts)
        if not files:
            raise InputError(f"--calib {calib} has no photos ({', '.join(sorted(exts))})")
        return files
    from skimage import data_dir  # the training set's own photos (scripts/make_sample_data.py)

    names = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
             "brick.png", "gravel.png", "hubble_deep_field.jpg"]
    return [Path(data_dir) / n for n in names if (Path(data_dir) / n).is_file()]


def _load(path: Path, side: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        s = side / max(im.size)
        if s < 1:
            im = im.resize((max(8, round(im.width * s)), max(8, round(im.height * s))),
                           Image.Resampling.LANCZOS)
        return np.asarray(im, dtype=np.float32) / 255.0


class _Recorder:
    """Wraps a float32 backend and keeps (a sample of) the inputs its weighted graphs are called
    with: every ``semantic`` and ``tile`` call, and a few query calls per image (each carries a
    whole tile's precompute)."""

    QUERIES_PER_IMAGE = 2

    def __init__(self, backend, rng: np.random.Generator):
        self.backend = backend
        self.rng = rng
        self.calls: dict[str, list[dict[str, np.ndarray]]] = {}
        self.queries_left: dict[str, int] = {}

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def _keep(self, graph: str, inputs) -> None:
        names = [n for n, _ in self.backend._inputs[graph]]
        arrays = [a for a in inputs if a is not None]
        self.calls.setdefault(graph, []).append(
            {k: a if isinstance(a, np.ndarray) else a.numpy() for k, a in zip(names, arrays)})

    def run(self, graph: str, *inputs):
        if graph == "prepare":  # a new image (or scale): query calls are recorded again
            self.queries_left = {"query": self.QUERIES_PER_IMAGE, "query_holes": self.QUERIES_PER_IMAGE}
        if graph in ("semantic", "tile"):
            self._keep(graph, inputs)
        return self.backend.run(graph, *inputs)

    def run_into(self, graph: str, out, start: int, count: int, *inputs) -> None:
        if self.queries_left.get(graph, 0) > 0:
            self._keep(graph, inputs)
            self.queries_left[graph] -= 1
        self.backend.run_into(graph, out, start, count, *inputs)


def calibration_inputs(export_dir: Path, calib: Path | None = None, seed: int = 0,
                       log: Callable[[str], Any] = print) -> dict[str, list[dict[str, np.ndarray]]]:
    """Per graph, input feeds recorded while the float32 export inpaints calibration photos
    (random ~30% masks, scale 1 and 2)."""
    from sair_deploy.backends.onnx_backend import OnnxBackend
    from sair_deploy.inpainter import Inpainter
    from sair_train.masks import training_mask

    files = _sources(calib)
    log(f"calibrating int8 ranges on {len(files)} photos"
        f"{'' if calib is None else f' from {calib}'}")
    rng = np.random.default_rng(seed)
    rec = _Recorder(OnnxBackend(export_dir, device="cpu", precision="fp32"), rng)
    inp = Inpainter(rec, tile=128)  # small tiles: each recorded query feed holds one
    for i, f in enumerate(files):
        image = _load(f, CALIB_SIDE)
        mask = training_mask(image.shape[:2], rng) > 0.5
        inp.set_image(image, mask)
        inp.inpaint(1.0 if i % 2 == 0 else 2.0)
    out = {}
    for graph, calls in rec.calls.items():
        if len(calls) > MAX_SAMPLES:
            calls = [calls[j] for j in sorted(rng.choice(len(calls), MAX_SAMPLES, replace=False))]
        out[graph] = calls
    return out


def kept_float32_nodes(model: onnx.ModelProto, coordinate_inputs: Iterable[str],
                       last_product_fp32: bool) -> list[str]:
    """Names of the Conv/MatMul/Gemm nodes that must stay float32: those fed (transitively) by
    coordinates or weights only, and, when ``last_product_fp32``, the last product of features (in the
    graph's order) and every product sharing its weights (a query graph's RGB layer, once per
    neighbour; the tile graph's AIR precompute, before its semantic term's loop)."""
    g = model.graph
    inits = {i.name for i in g.initializer}
    coord_only = set(coordinate_inputs)
    features = {i.name for i in g.input} - coord_only
    derived = set(features)  # tensors that depend on a feature input
    for n in g.node:
        if n.op_type in ("Shape", "Size"):  # a feature's shape is plan arithmetic, not a feature
            coord_only.update(n.output)
        elif any(x in derived for x in n.input):
            derived.update(n.output)
        elif n.op_type != "Constant" and any(x in coord_only for x in n.input):
            coord_only.update(n.output)
    keep = []
    products = [n for n in g.node if n.op_type in QUANT_OPS]
    for n in products:
        if any(x in coord_only and x not in inits for x in n.input):
            keep.append(n.name)
        elif not any(x in derived for x in n.input):
            # weights only (SIR's output layer folded into AIR's semantic block): folded once per
            # session, never quantized as if it were an activation
            keep.append(n.name)
    of_features = [n for n in products if n.name not in keep]
    if last_product_fp32 and of_features:
        # the last product, and every other product of its weights (the query graphs apply the
        # RGB layer once per neighbour): a shared weight is quantized if any of its products is
        weights = {x for x in of_features[-1].input if x in inits}
        keep += [n.name for n in of_features if n is of_features[-1] or weights & set(n.input)]
    return keep


def _name_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every node a unique name (the quantizer excludes nodes by name)."""
    seen: set[str] = set()
    for i, n in enumerate(model.graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_{i}"
        seen.add(n.name)
    return model


class _QuietRootLogger:
    """onnxruntime.quantization logs advice through the root logger; keep the export's log clean."""

    def __enter__(self):
        import logging

        self.logger = logging.getLogger()
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader over recorded feeds, read a range at a
    time (``CalibStridedMinMax``) so the calibrator holds one feed's results at once."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._feeds = feeds
        self.set_range(0, len(feeds))

    def __len__(self) -> int:
        return len(self._feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self._feeds[start_index:end_index])

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # some ORT versions call it
        pass


def quantize_graph(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]],
                   coordinate_inputs: Iterable[str], keep_last: bool) -> list[str]:
    """Write the QDQ int8 version of graph ``src`` to ``dst``, its last product kept float32 if
    ``keep_last``; returns the names of the products kept float32."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = _name_nodes(onnx.load(str(src)))
    keep = kept_float32_nodes(model, coordinate_inputs, last_product_fp32=keep_last)
    with tempfile.TemporaryDirectory() as tmp, _QuietRootLogger():
        named = Path(tmp) / src.name
        onnx.save(model, str(named))
        quantize_static(str(named), str(dst), _Reader(feeds), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(QUANT_OPS), per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=keep, calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                                       # one feed per collection, ranges merged after each
                                       "CalibStridedMinMax": 1})
    return keep


def quantize_query_dynamic(src: Path, dst: Path, coordinate_inputs: Iterable[str]) -> list[str]:
    """Dynamic int8 quantization of the query graph's hidden layers (ranges per call)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = _name_nodes(onnx.load(str(src)))
    keep = kept_float32_nodes(model, coordinate_inputs, last_product_fp32=True)
    with tempfile.TemporaryDirectory() as tmp, _QuietRootLogger():
        named = Path(tmp) / src.name
        onnx.save(model, str(named))
        quantize_dynamic(str(named), str(dst), op_types_to_quantize=["MatMul", "Gemm"],
                         per_channel=True, weight_type=QuantType.QInt8, nodes_to_exclude=keep)
    return keep


def write_int8_graphs(export_dir: str | os.PathLike, graphs: dict[str, Any], cfg,
                      calib: Path | None = None, query_mode: str = QUERY_MODE,
                      log: Callable[[str], Any] = print) -> dict[str, list[str]]:
    """Quantize every graph of a float32 export in ``export_dir`` (its manifest already written);
    returns ``{graph: [file]}`` of the int8 files to record under ``files["int8"]``."""
    from .onnx import graph_io

    export_dir = Path(export_dir)
    feeds = calibration_inputs(export_dir, calib, log=log)
    files: dict[str, list[str]] = {}
    for name, g in graphs.items():
        if name in KEPT_FP32_GRAPHS or name not in feeds:
            files[name] = g["files"]["fp32"]
            continue
        src = export_dir / g["files"]["fp32"][0]
        dst = export_dir / f"{name}.int8.onnx"
        coords = graph_io(name, cfg).coordinate_inputs
        is_query = name in ("query", "query_holes")
        if is_query and query_mode == "float":
            files[name] = g["files"]["fp32"]
            log(f"kept {name} float32 (--int8-query float)")
            continue
        dynamic = is_query and query_mode == "dynamic"
        if dynamic:
            keep = quantize_query_dynamic(src, dst, coords)
        else:
            # The tile graph's last product is AIR's precompute, which every query reads as it is:
            # in int8 it cost the bundle 0.02 dB of upscaling PSNR on the validation crops (x3),
            # and keeping it float32 cost no time measurable at 512² (the encoder dominates).
            keep = quantize_graph(src, dst, feeds[name], coords, keep_last=is_query or name == "tile")
        log(f"quantized {name} to int8 ({'dynamic' if dynamic else 'QDQ'}"
            f", {len(keep)} products kept float32)")
        files[name] = [dst.name]
    return files
