"""Export each deployed graph of :func:`sair_deploy.model.graphs.build_graphs` to ONNX.

Every graph has batch 1 and dynamic spatial sizes / query counts (see :data:`GRAPH_IO`). The
graphs are traced with ``torch.export`` (``dynamo=True``) at opset 18; weights are embedded in the
``.onnx`` file unless the model is over protobuf's 2 GB limit.
"""

from __future__ import annotations

import copy
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
    """Names of a graph's inputs and its one output, and which inputs carry coordinates."""

    inputs: tuple[str, ...]
    output: str
    coordinate_inputs: tuple[str, ...] = ()  # kept float32 by the fp16 pass


GRAPH_IO: dict[str, GraphIO] = {
    "semantic": GraphIO(("sem_image", "sem_valid"), "sem_pre"),
    "fill": GraphIO(("image", "mask"), "filled"),
    "appearance": GraphIO(("image", "mask"), "app"),
    "precompute": GraphIO(("app", "sem_pre", "centres", "pixel_cell"), "air_pre",
                          ("centres", "pixel_cell")),
    "precompute_nosem": GraphIO(("app",), "air_pre"),
    "query": GraphIO(("air_pre", "grid", "coord", "cell"), "rgb", ("grid", "coord", "cell")),
}


def graph_io(name: str, cfg: SAIRConfig) -> GraphIO:
    """The :class:`GraphIO` of graph ``name`` for a model with config ``cfg``."""
    if name == "precompute" and not cfg.use_semantic:
        return GRAPH_IO["precompute_nosem"]
    return GRAPH_IO[name]


def app_channels(cfg: SAIRConfig) -> int:
    """Channels of the appearance graph's output (a residual model appends the 3 base colours)."""
    return cfg.app.out_channels + (3 if cfg.residual else 0)


def air_channels(cfg: SAIRConfig) -> int:
    """Channels of the precompute graph's output (the base colours ride along if residual)."""
    return cfg.air.hidden + (3 if cfg.residual else 0)


def sample_inputs(name: str, cfg: SAIRConfig, size: int = 0, seed: int = 0) -> dict[str, Tensor]:
    """Random inputs for graph ``name``; ``size`` (0, 1, 2, ...) picks distinct shapes.

    Sizes on dynamic axes are >= 2 and distinct from each other so ``torch.export`` keeps them
    symbolic. Coordinates and cells are valid for the shapes they come with.
    """
    from sair_deploy.coords import make_coord

    g = torch.Generator().manual_seed(seed + 101 * size)
    rand = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    ps = cfg.semantic.patch_size
    if name == "semantic":
        h, w = ps * (3 + size), ps * (2 + 2 * size)
        valid = (rand(1, 1, h, w) > 0.3).float()
        return {"sem_image": rand(1, 3, h, w) * valid, "sem_valid": valid}
    if name == "fill":  # the whole image: any size
        h, w = 23 + 9 * size, 30 + 5 * size
        mask = (rand(1, 1, h, w) > 0.6).float()
        mask[..., h // 3: h // 2, w // 4: w // 2] = 1
        return {"image": rand(1, 3, h, w), "mask": mask}
    if name == "appearance":
        h, w = 4 * (6 + 3 * size), 4 * (5 + 2 * size)
        mask = (rand(1, 1, h, w) > 0.7).float()
        return {"image": rand(1, 3, h, w), "mask": mask}
    if name == "precompute":
        big_h, big_w = 40 + 8 * size, 36 + 12 * size  # the full image the block lies in
        r0, c0, bh, bw = 3 + size, 5, 7 + 2 * size, 6 + 3 * size
        app = rand(1, app_channels(cfg), bh + 2, bw + 2) * 2
        if not cfg.use_semantic:
            return {"app": app}
        sem_h, sem_w = 3 + size, 2 + 2 * size
        centres = torch.from_numpy(make_coord((big_h, big_w), (r0, r0 + bh), (c0, c0 + bw)))[None]
        return {"app": app, "sem_pre": rand(1, cfg.sir.hidden, sem_h, sem_w) - 0.5,
                "centres": centres, "pixel_cell": torch.tensor([[[2.0 / big_h, 2.0 / big_w]]])}
    if name == "query":
        big_h, big_w = 40 + 8 * size, 36 + 12 * size
        r0, c0, bh, bw = 4 + size, 6, 9 + 2 * size, 8 + 3 * size
        q = 11 + 17 * size
        # queries whose 4 neighbours all lie in rows r0..r0+bh, cols c0..c0+bw (a margin of 1)
        rows = r0 + 1 + rand(q) * (bh - 2)
        cols = c0 + 1 + rand(q) * (bw - 2)
        coord = torch.stack([-1 + 2 * rows / big_h, -1 + 2 * cols / big_w], dim=-1)[None]
        scale = 1.5 + size
        return {"air_pre": rand(1, air_channels(cfg), bh, bw) - 0.5,
                "grid": torch.tensor([big_h, big_w, r0, c0], dtype=torch.float32),
                "coord": coord.float(),
                "cell": torch.tensor([[[2.0 / (big_h * scale), 2.0 / (big_w * scale)]]])}
    raise ValueError(f"unknown graph {name!r}")


def dynamic_shapes(name: str, cfg: SAIRConfig) -> dict[str, dict[int, object] | None]:
    """``torch.export`` dynamic shapes for graph ``name`` (batch is always 1)."""
    ps = cfg.semantic.patch_size
    if name == "semantic":
        gh, gw = Dim("sem_grid_h", min=1, max=512), Dim("sem_grid_w", min=1, max=512)
        spec = {2: ps * gh, 3: ps * gw}
        return {"sem_image": spec, "sem_valid": spec}
    if name == "fill":
        spec = {2: Dim("image_h", min=1, max=65536), 3: Dim("image_w", min=1, max=65536)}
        return {"image": spec, "mask": spec}
    if name == "appearance":
        qh, qw = Dim("quarter_h", min=1, max=8192), Dim("quarter_w", min=1, max=8192)
        spec = {2: 4 * qh, 3: 4 * qw}
        return {"image": spec, "mask": spec}
    if name == "precompute":
        app = {2: Dim("app_h", min=3, max=65536), 3: Dim("app_w", min=3, max=65536)}
        if not cfg.use_semantic:
            return {"app": app}
        return {"app": app,
                "sem_pre": {2: Dim("sem_h", min=1, max=512), 3: Dim("sem_w", min=1, max=512)},
                "centres": {1: Dim("n_centres", min=1, max=2**31 - 1)},
                "pixel_cell": None}
    if name == "query":
        return {"air_pre": {2: Dim("block_h", min=1, max=65536), 3: Dim("block_w", min=1, max=65536)},
                "grid": None,
                "coord": {1: Dim("n_queries", min=1, max=2**31 - 1)},
                "cell": None}
    raise ValueError(f"unknown graph {name!r}")


def export_modules(model: SAIR) -> dict[str, nn.Module]:
    """The modules traced for each graph: exactly those of :func:`build_graphs`."""
    return build_graphs(model)


def export_graph(module: nn.Module, name: str, cfg: SAIRConfig) -> onnx.ModelProto:
    """Trace one graph to an ONNX model (opset 18, dynamic shapes, named inputs/outputs)."""
    io = graph_io(name, cfg)
    inputs = sample_inputs(name, cfg, size=0)
    args = tuple(inputs[k] for k in io.inputs)
    shapes = dynamic_shapes(name, cfg)
    with torch.no_grad():
        program = torch.onnx.export(
            module, args, dynamo=True, opset_version=OPSET, input_names=list(io.inputs),
            output_names=[io.output], dynamic_shapes={k: shapes[k] for k in io.inputs},
            external_data=False, verbose=False, optimize=True,
        )
    proto = program.model_proto
    # The exporter annotates intermediate values with the shapes torch.export derived from the
    # sample; through ceil-mode pyramids (the fill) those formulas are only right for the sample,
    # and ONNX Runtime plans its buffers by them. The ops themselves compute shapes at run time,
    # so the annotations are dropped and every runtime infers its own.
    del proto.graph.value_info[:]
    proto.producer_name = "sair-export"
    return proto


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
