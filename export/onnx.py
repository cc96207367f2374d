"""Export each deployed graph of :func:`sair_deploy.model.graphs.build_graphs` to ONNX.

Every graph has batch 1 and dynamic spatial sizes / query counts (see :data:`GRAPH_IO`). The
graphs are traced with ``torch.export`` (``dynamo=True``) at opset 18; weights are embedded in the
``.onnx`` file unless the model is over protobuf's 2 GB limit.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn
from torch.export import Dim

from sair_deploy.files import atomic_write, make_readable
from sair_deploy.model.config import SAIRConfig
from sair_deploy.model.graphs import build_graphs
from sair_deploy.model.sair import SAIR


OPSET = 18
_PROTO_LIMIT = 2**31 - 2**20  # protobuf's 2 GB, with room for the graph itself


@dataclass(frozen=True)
class GraphIO:
    """Names of a graph's inputs and outputs, and which inputs are plan integers or indices (never
    image features: the float16 pass keeps what they feed in float32)."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    coordinate_inputs: tuple[str, ...] = ()


GRAPH_IO: dict[str, GraphIO] = {
    "prepare": GraphIO(("image", "holes", "region"), ("prepared", "mask"), ("holes", "region")),
    "semantic": GraphIO(("image", "holes", "region"), ("sem_pre",), ("holes", "region")),
    "fill": GraphIO(("image", "mask"), ("filled",)),
    "tile": GraphIO(("image", "mask", "sem_pre", "box"), ("air_pre",), ("box",)),
    "tile_nosem": GraphIO(("image", "mask", "box"), ("air_pre",), ("box",)),
    "query": GraphIO(("air_pre", "rect"), ("rgb",), ("rect",)),
    "query_holes": GraphIO(("air_pre", "holes", "span"), ("rgb",), ("holes", "span")),
    "composite": GraphIO(("image", "holes", "rgb", "region"), ("out",), ("holes", "region")),
    "assemble": GraphIO(("rgb", "out_size", "row_edges", "col_edges"), ("out",),
                        ("out_size", "row_edges", "col_edges")),
}
# Layout and classical graphs: no learned weights, cheap, division- or rounding-heavy; the float16
# export keeps them float32.
FP32_GRAPHS = frozenset({"prepare", "fill", "composite", "assemble"})


def graph_io(name: str, cfg: SAIRConfig) -> GraphIO:
    """The :class:`GraphIO` of graph ``name`` for a model with config ``cfg``."""
    if name == "tile" and not cfg.use_semantic:
        return GRAPH_IO["tile_nosem"]
    return GRAPH_IO[name]


def app_channels(cfg: SAIRConfig) -> int:
    """Channels of the AppEncoder's output with the base colours (3) of a residual model."""
    return cfg.app.out_channels + (3 if cfg.residual else 0)


def air_channels(cfg: SAIRConfig) -> int:
    """Channels of the tile graph's output (the base colours ride along if residual)."""
    return cfg.air.hidden + (3 if cfg.residual else 0)


def _i64(*values: int) -> Tensor:
    return torch.tensor(values, dtype=torch.int64)


def sample_inputs(name: str, cfg: SAIRConfig, size: int = 0, seed: int = 0) -> dict[str, Tensor]:
    """Valid random inputs for graph ``name``; ``size`` (0, 1, 2, ...) picks distinct shapes.

    Sizes on dynamic axes are >= 2 and distinct from each other so ``torch.export`` keeps them
    symbolic; the plan integers describe windows that lie inside the arrays they come with.
    """
    g = torch.Generator().manual_seed(seed + 101 * size)
    rand = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    if name in ("prepare", "semantic", "composite"):
        # the whole image, and a region of it (start, size) that holds the holes
        h, w = 29 + 9 * size, 34 + 5 * size
        rh, rw = h - 4 - size, w - 3
        region = _i64(2 + size, rh, 1, rw, 2 + size, 1 + 2 * size)
        n = 7 + 3 * size
        holes = torch.randperm(rh * rw, generator=g)[:n].sort().values
        out = {"image": (rand(1, h, w, 3) * 255).to(torch.uint8),
               "holes": torch.cat([holes, _i64(rh * rw)]).to(torch.int32)}
        if name == "composite":
            out["rgb"] = rand(n, 3) * 1.2 - 0.1
        return {**out, "region": region}
    if name == "fill":  # the whole region: any size
        h, w = 23 + 9 * size, 30 + 5 * size
        mask = (rand(1, 1, h, w) > 0.6).float()
        mask[..., h // 3: h // 2, w // 4: w // 2] = 1
        return {"image": rand(1, 3, h, w), "mask": mask}
    if name == "tile":
        rh, rw = 37 + 8 * size, 42 + 4 * size  # the region's true size; the arrays are padded
        hp, wp = rh + (-rh) % 4, rw + (-rw) % 4
        ir0, ir1, ic0, ic1 = 4, hp, 0, 28 + 4 * size  # an inner window touching bottom and left
        keep = (9, rh - 9, 0, 20 + 2 * size)  # start, size
        mask = (rand(1, 1, hp, wp) > 0.7).float()
        out = {"image": rand(1, 3, hp, wp), "mask": mask,
               "box": _i64(ir0, (ir1 - ir0) // 4, ic0, (ic1 - ic0) // 4, *keep, rh, rw, rh + 11,
                           rw + 6 + size, 3, 2 + size)}
        if cfg.use_semantic:
            out["sem_pre"] = rand(1, cfg.sir.hidden, 3 + size, 2 + 2 * size) - 0.5
        return out
    if name in ("query", "query_holes"):
        big_h, big_w = 40 + 8 * size, 36 + 12 * size  # the input image
        r0, c0, bh, bw = 4 + size, 6, 14 + 2 * size, 15 + 3 * size  # air_pre's window in it
        air = rand(1, bh, bw, air_channels(cfg)) - 0.5  # rows: channels last
        m = 3  # the plan's margin: every neighbour and base tap of the queries is in the window
        if name == "query":
            s = 1.5 + size  # output rows/cols whose centres lie m pixels inside the window
            oh, ow = round(big_h * s), round(big_w * s)
            oy0, ox0 = math.ceil((r0 + m + 0.5) * s), math.ceil((c0 + m + 0.5) * s)
            rect = _i64(oy0, oy0 + 3 + size, ox0, ox0 + 4 + 2 * size, oh, ow, big_h, big_w, r0, c0)
            return {"air_pre": air, "rect": rect}
        # scale 1: holes of a region starting at (2, 3), m pixels inside the window
        off_r, off_c, rw = 2, 3, big_w - 3
        rows = torch.randint(r0 + m, r0 + bh - m, (12 + 5 * size,), generator=g) - off_r
        cols = torch.randint(c0 + m, c0 + bw - m, (12 + 5 * size,), generator=g) - off_c
        holes = torch.cat([rows * rw + cols, _i64((big_h - off_r) * rw)]).to(torch.int32)
        return {"air_pre": air, "holes": holes,
                "span": _i64(2, 9 + 3 * size, rw, big_h, big_w, off_r, off_c, r0, c0)}
    if name == "assemble":
        rows, cols = [0, 5 + size, 9 + 2 * size], [0, 4, 11 + size, 13 + size]
        return {"rgb": rand(rows[-1] * cols[-1], 3) * 1.2 - 0.1, "out_size": _i64(rows[-1], cols[-1]),
                "row_edges": _i64(*rows), "col_edges": _i64(*cols)}
    raise ValueError(f"unknown graph {name!r}")


def dynamic_shapes(name: str, cfg: SAIRConfig) -> dict[str, dict[int, object] | None]:
    """``torch.export`` dynamic shapes for graph ``name`` (batch is always 1)."""
    big = 2**31 - 1
    if name in ("prepare", "semantic", "composite"):
        spec = {"image": {1: Dim("image_h", min=2, max=65536), 2: Dim("image_w", min=2, max=65536)},
                "holes": {0: Dim("n_holes", min=2, max=big)}, "region": None}
        if name == "composite":
            spec["rgb"] = {0: Dim("n_rgb", min=1, max=big)}
        return spec
    if name == "fill":
        spec = {2: Dim("image_h", min=1, max=65536), 3: Dim("image_w", min=1, max=65536)}
        return {"image": spec, "mask": spec}
    if name == "tile":
        qh, qw = Dim("quarter_h", min=1, max=16384), Dim("quarter_w", min=1, max=16384)
        spec = {2: 4 * qh, 3: 4 * qw}
        out = {"image": spec, "mask": spec, "box": None}
        if cfg.use_semantic:
            out["sem_pre"] = {2: Dim("sem_h", min=1, max=512), 3: Dim("sem_w", min=1, max=512)}
        return out
    air = {1: Dim("keep_h", min=2, max=65536), 2: Dim("keep_w", min=2, max=65536)}
    if name == "query":
        return {"air_pre": air, "rect": None}
    if name == "query_holes":
        return {"air_pre": air, "holes": {0: Dim("n_holes", min=2, max=big)}, "span": None}
    if name == "assemble":
        return {"rgb": {0: Dim("n_rgb", min=2, max=big)}, "out_size": None,
                "row_edges": {0: Dim("n_row_edges", min=2, max=4096)},
                "col_edges": {0: Dim("n_col_edges", min=2, max=4096)}}
    raise ValueError(f"unknown graph {name!r}")


def export_modules(model: SAIR) -> dict[str, nn.Module]:
    """The modules traced for each graph: those of :func:`build_graphs`, the AppEncoder's
    transposed convolutions run as convolutions
    (:func:`~sair_deploy.model.appearance.for_export`: the same function, faster in ONNX Runtime)."""
    return build_graphs(model.for_export())


def export_graph(module: nn.Module, name: str, cfg: SAIRConfig) -> onnx.ModelProto:
    """Trace one graph to an ONNX model (opset 18, dynamic shapes, named inputs/outputs)."""
    io = graph_io(name, cfg)
    inputs = sample_inputs(name, cfg, size=0)
    names = [k for k in io.inputs if k in inputs]
    args = tuple(inputs[k] for k in names)
    shapes = dynamic_shapes(name, cfg)
    with torch.no_grad():
        program = torch.onnx.export(
            module, args, dynamo=True, opset_version=OPSET, input_names=names,
            output_names=list(io.outputs), dynamic_shapes={k: shapes[k] for k in names},
            external_data=False, verbose=False, optimize=True,
        )
    proto = program.model_proto
    # The exporter annotates intermediate values with the shapes torch.export derived from the
    # sample; through ceil-mode pyramids (the fill) those formulas are only right for the sample,
    # and ONNX Runtime plans its buffers by them. The ops themselves compute shapes at run time,
    # so the annotations are dropped and every runtime infers its own.
    del proto.graph.value_info[:]
    _shapes_from_casts(proto)
    proto.producer_name = "sair-export"
    return proto


def _shapes_from_casts(proto: onnx.ModelProto) -> None:
    """Read the shape of an 8-bit input from its cast to float instead of the input itself.

    TensorRT takes 8-bit tensors only at a network's edges, feeding a cast; the exporter reads
    dynamic sizes with ``Shape`` on the graph input. The shape of the cast is the same."""
    g = proto.graph
    u8 = {i.name for i in g.input if i.type.tensor_type.elem_type == onnx.TensorProto.UINT8}
    casts = [n for n in g.node if n.op_type == "Cast" and n.input[0] in u8]
    cast_of = {n.input[0]: n.output[0] for n in casts}
    for n in g.node:
        if n.op_type == "Shape" and n.input[0] in cast_of:
            n.input[0] = cast_of[n.input[0]]
    # the casts read graph inputs only: first in the node list keeps it topologically sorted
    rest = [n for n in g.node if not (n.op_type == "Cast" and n.input[0] in u8)]
    del g.node[:]
    g.node.extend(casts + rest)


def save_model(proto: onnx.ModelProto, path: str | os.PathLike) -> list[str]:
    """Write ``proto`` atomically; weights go to ``NAME.data`` beside it only past 2 GB.

    Returns the files written (relative names).
    """
    path = Path(path)
    if proto.ByteSize() < _PROTO_LIMIT:
        atomic_write(path, lambda tmp: onnx.save_model(proto, tmp))
        return [path.name]
    data = path.name + ".data"
    proto = copy.deepcopy(proto)  # saving moves the weights out of the proto
    # The model names its data file, so both are written under their final names in a temp
    # folder beside them, then moved into place, data first (onnx appends to existing data files).
    tmpdir = Path(tempfile.mkdtemp(prefix=".export-", dir=path.parent))
    try:
        onnx.save_model(proto, str(tmpdir / path.name), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=data, size_threshold=1024)
        for name in (data, path.name):
            make_readable(tmpdir / name)  # mkdtemp's files are private
            os.replace(tmpdir / name, path.parent / name)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return [path.name, data]


def export_all(model: SAIR, out_dir: str | os.PathLike, log=print) -> dict[str, onnx.ModelProto]:
    """Export every graph of ``model`` into ``out_dir/NAME.onnx``; returns the protos by name."""
    out_dir = Path(out_dir)
    protos = {}
    for name, module in export_modules(model).items():
        log(f"exporting {name}")
        protos[name] = export_graph(module, name, model.cfg)
    return protos
