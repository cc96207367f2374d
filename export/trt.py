"""TensorRT engines from the exported ONNX graphs, with TensorRT's Python API.

Networks are strongly typed (the precision is whatever the ONNX graph says: build from the
``--fp16`` graphs for float16 engines; TensorRT 10.12+/11 has no FP16 builder switch for such
networks). Each engine has one optimisation profile covering the sizes the runtime feeds it
(:func:`profiles`: regions up to the plan's largest side, tiles' kept windows, query chunks, the
semantic grid; :func:`value_profiles`: the ranges of the plan vectors, which TensorRT reads as
shape tensors), a shared
timing cache speeds up rebuilds, and the workspace is capped. The manifest records the TensorRT
version, the GPU and its compute capability; :mod:`sair_deploy.backends.trt_backend` refuses
engines built elsewhere.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Any

from sair_deploy.backends.trt_backend import TrtUnavailable, check_engine_host, gpu_info  # noqa: F401
from sair_deploy.errors import ModelError
from sair_deploy.files import atomic_write
from sair_deploy.model.config import SAIRConfig

Shape = tuple[int, ...]
Profile = dict[str, tuple[Shape, Shape, Shape]]  # input -> (min, opt, max)

ENGINE_DIR = "trt"
TIMING_CACHE = "trt/timing.cache"


def _round_up(x: int, m: int) -> int:
    return int(math.ceil(x / m) * m)


# largest values the plan vectors carry: image sides and output sides (a 400-megapixel output)
_SIDE = 65536


def profile_sizes(cfg: SAIRConfig, runtime: dict[str, int]) -> dict[str, int]:
    """The sizes each graph sees at runtime with these tile/chunk sizes (the ``opt`` of a profile
    is the steady state: a 1024-pixel image, full tiles, full chunks)."""
    ps = cfg.semantic.patch_size
    return {
        "region": _round_up(runtime["max_side"], 4),  # the largest (padded) region
        "keep": runtime["tile"] + 2 * runtime["margin"],  # a tile's kept window
        "semantic": max(ps, _round_up(cfg.semantic.max_side, ps)),
        "chunk": runtime["chunk"],
        "opt_side": 1024,
    }


def profiles(cfg: SAIRConfig, runtime: dict[str, int]) -> dict[str, Profile]:
    """``{graph: {input: (min, opt, max)}}`` for the dynamic *shapes* of every graph's inputs."""
    from sair_deploy.model.bands import banded_rows

    s = profile_sizes(cfg, runtime)
    ps = cfg.semantic.patch_size
    base = 3 if cfg.residual else 0  # a residual model carries the base colours along
    hid_sir, hid_air = cfg.sir.hidden, cfg.air.hidden + base
    r, k, sem, o = s["region"], s["keep"], s["semantic"], s["opt_side"]
    pixels = r * r
    holes = ((1,), (o * o // 3 + 1,), (pixels + 1,))  # hole indices + the sentinel
    u8 = ((1, 1, 1, 3), (1, o, o, 3), (1, r, r, 3))  # the whole image
    nchw = lambda c, lo: ((1, c, lo, lo), (1, c, o, o), (1, c, r, r))  # noqa: E731
    # rows (channels last); with a semantic term the tile graph rounds its rows up to whole bands
    kr = banded_rows(k) if cfg.use_semantic else k
    air = ((1, 1, 1, hid_air), (1, kr, k, hid_air), (1, kr, k, hid_air))
    out: dict[str, Profile] = {
        "prepare": {"image": u8, "holes": holes},
        "tile": {"image": nchw(3, 4), "mask": nchw(1, 4)},
        "query": {"air_pre": air},
        "query_holes": {"air_pre": air, "holes": holes},
        "composite": {"image": u8, "holes": holes,
                      "rgb": ((1, 3), (o * o // 3, 3), (pixels, 3))},
        "assemble": {"rgb": ((1, 3), (4 * o * o, 3), (400_000_000, 3)),
                     "row_edges": ((2,), (3,), (4097,)), "col_edges": ((2,), (3,), (4097,))},
    }
    if cfg.fill != "zero":
        out["fill"] = {"image": nchw(3, 4), "mask": nchw(1, 4)}
    if cfg.use_semantic:
        g = sem // ps
        out["semantic"] = {"image": u8, "holes": holes}
        out["tile"]["sem_pre"] = ((1, hid_sir, 1, 1), (1, hid_sir, g, g), (1, hid_sir, g, g))
    return out


def value_profiles(cfg: SAIRConfig, runtime: dict[str, int]) -> dict[str, Profile]:
    """``{graph: {input: (min, opt, max)}}`` for the *values* of the plan vectors, which
    TensorRT reads on the host as shape tensors (see :mod:`sair_deploy.model.graphs`)."""
    s = profile_sizes(cfg, runtime)
    r, k, q, t = s["region"], s["keep"], s["chunk"], runtime["tile"]
    inner = (t + 2 * runtime.get("overlap", 0)) // 4
    big = _SIDE
    box = ((0, 1, 0, 1, 0, 1, 0, 1, 1, 1, 1, 1, 0, 0),
           (0, inner, 0, inner, 0, k, 0, k, 1024, 1024, 1024, 1024, 0, 0),
           (r, r // 4, r, r // 4, r, k, r, k, r, r, big, big, big, big))
    rect = ((0, 1, 0, 1, 1, 1, 1, 1, 0, 0),
            (0, 2, 0, 2 * t, 2048, 2048, 1024, 1024, 0, 0),
            (big,) * 10)
    span = ((0, 1, 1, 1, 1, 0, 0, 0, 0),
            (0, min(q, t * t), 1024, 1024, 1024, 0, 0, 0, 0),
            (r * r, r * r + 1, r, big, big, big, big, big, big))
    ps, sem = cfg.semantic.patch_size, s["semantic"]
    g = sem // ps  # the semantic grid, in patches
    region = ((0, 1, 0, 1, 1, 1), (0, 1024, 0, 1024, g, g), (r, r, r, r, g, g))
    out = {"prepare": {"region": region}, "composite": {"region": region},
           "tile": {"box": box}, "query": {"rect": rect}, "query_holes": {"span": span},
           "assemble": {"out_size": ((1, 1), (2048, 2048), (big, big))}}
    if cfg.use_semantic:
        out["semantic"] = {"region": region}
    return out


def check_available() -> tuple[Any, dict[str, str]]:
    """The ``tensorrt`` module and the GPU's info, or :class:`TrtUnavailable` saying what is missing."""
    if importlib.util.find_spec("tensorrt") is None:
        raise TrtUnavailable("TensorRT is not installed (pip install 'sair-deploy[gpu]' on a CUDA host)")
    import tensorrt as trt

    return trt, gpu_info()


def check_graph_for_tensorrt(onnx_path: Path) -> None:
    """Raise :class:`ModelError` naming the node, op and reason if TensorRT's ONNX parser would
    reject the graph at ``onnx_path`` (see :mod:`.trt_ops`)."""
    import onnx

    from .trt_ops import TENSORRT_VERSION, check_onnx_for_tensorrt

    problems = check_onnx_for_tensorrt(onnx.load(str(onnx_path), load_external_data=False))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ModelError(f"{onnx_path.name} breaks TensorRT {TENSORRT_VERSION}'s ONNX parser rules: "
                         f"{problems[0]}{more}")


def build_engine(trt, onnx_path: Path, profile: Profile, workspace_mb: int,
                 timing_cache: bytes, log=print, values: Profile | None = None) -> tuple[bytes, bytes]:
    """Build one strongly typed engine; returns (serialized engine, updated timing cache)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 10 needs the flag; 11 is always strongly typed and keeps it only as a deprecated no-op
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if strongly_typed is None else 1 << int(strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    cache = config.create_timing_cache(timing_cache)
    config.set_timing_cache(cache, ignore_mismatch=False)
    opt = builder.create_optimization_profile()
    values = values or {}
    for i in range(network.num_inputs):
        t = network.get_input(i)
        if t.is_shape_tensor:  # a plan vector: TensorRT needs the range of its values
            if t.name not in values:
                raise RuntimeError(f"no value profile for shape input {t.name} of {onnx_path.name}")
            lo, mid, hi = values[t.name]
            opt.set_shape_input(t.name, lo, mid, hi)
        if any(d < 0 for d in t.shape):
            if t.name not in profile:
                raise RuntimeError(f"no optimisation profile for dynamic input {t.name} of {onnx_path.name}")
            lo, mid, hi = profile[t.name]
            opt.set_shape(t.name, lo, mid, hi)
    config.add_optimization_profile(opt)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"TensorRT failed to build an engine for {onnx_path.name} (see its log above)")
    return bytes(engine), bytes(config.get_timing_cache().serialize())


def build_engines(export_dir: str | os.PathLike, cfg: SAIRConfig, onnx_files: dict[str, str],
                  precision: str, runtime: dict[str, int], workspace_mb: int = 4096,
                  log=print) -> dict[str, Any]:
    """Build an engine per graph into ``export_dir/trt``; returns the manifest's ``trt`` section.

    Raises :class:`ModelError` when a graph breaks a rule of TensorRT's ONNX parser (checked
    statically first, so this holds without TensorRT too) and :class:`TrtUnavailable` when
    TensorRT or a GPU is missing.
    """
    export_dir = Path(export_dir)
    for rel in onnx_files.values():
        check_graph_for_tensorrt(export_dir / rel)
    trt, gpu = check_available()
    cache_path = export_dir / TIMING_CACHE
    cache = cache_path.read_bytes() if cache_path.is_file() else b""
    profs, vals = profiles(cfg, runtime), value_profiles(cfg, runtime)
    engines = {}
    for name, rel in onnx_files.items():
        log(f"building TensorRT engine for {name} ({precision})")
        blob, cache = build_engine(trt, export_dir / rel, profs[name], workspace_mb, cache, log,
                                   values=vals.get(name))
        out = f"{ENGINE_DIR}/{name}.engine"
        atomic_write(export_dir / out, lambda tmp, b=blob: Path(tmp).write_bytes(b))
        engines[name] = {"file": out, "source": rel,
                         "profile": {k: [list(s) for s in v] for k, v in profs[name].items()},
                         "values": {k: [list(s) for s in v] for k, v in vals.get(name, {}).items()}}
    atomic_write(cache_path, lambda tmp: Path(tmp).write_bytes(cache))
    return {"tensorrt_version": trt.__version__, **gpu, "precision": precision,
            "workspace_mb": workspace_mb, "strongly_typed": True, "timing_cache": TIMING_CACHE,
            "engines": engines}
