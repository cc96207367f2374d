"""The TensorRT backend's real call path (engines built by build_engines, run by TrtBackend under
the Inpainter) against a stand-in for TensorRT and CUDA that enforces profiles, dtypes and where
memory lives (tests/trt_standin.py). TensorRT itself cannot be installed here."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest

from conftest import make_model, random_case
from trt_standin import FakeCudart, fake_tensorrt

from sair_deploy.errors import InputError
from sair_deploy.manifest import load_manifest, write_manifest

PLAN = {"tile": 32, "chunk": 300, "margin": 3, "max_side": 96}


@pytest.fixture(scope="module")
def model():
    return make_model(fill="onion", residual=True, base="lanczos")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, model):
    from sair_deploy.model.checkpoint import save_checkpoint
    from sair_export.pipeline import export_checkpoint

    d = tmp_path_factory.mktemp("trt")
    save_checkpoint(model, d / "m.safetensors")
    export_checkpoint(d / "m.safetensors", d / "exp", log=lambda s: None)
    return d / "exp"


@pytest.fixture()
def trt_export(exported, tmp_path, monkeypatch, model):
    """The export with stand-in engines built for a small plan, and the stand-in installed."""
    import sair_deploy.backends.trt_backend as trt_backend
    import sair_export.trt as trt_mod

    out = tmp_path / "exp"
    shutil.copytree(exported, out)
    cudart = FakeCudart()
    trt = fake_tensorrt(cudart)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    fake_gpu = lambda device=0: {"gpu": "Stand-in GPU", "compute_capability": "9.0"}  # noqa: E731
    monkeypatch.setattr(trt_mod, "gpu_info", fake_gpu)
    monkeypatch.setattr(trt_backend, "gpu_info", fake_gpu)
    monkeypatch.setattr(trt_backend, "_cudart", lambda: cudart)
    m = load_manifest(out)
    runtime = {**m["runtime"], **PLAN}
    sources = {n: g["files"]["fp32"][0] for n, g in m["graphs"].items()}
    m["trt"] = trt_mod.build_engines(out, model.cfg, sources, "fp32", runtime, log=lambda s: None)
    m["runtime"] = runtime
    write_manifest(out, m)
    return out, trt, cudart


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_trt_backend_runs_the_runtime_on_device_buffers(trt_export, model, scale):
    from sair_deploy.api import load_inpainter
    from sair_deploy.backends.torch_backend import TorchBackend
    from sair_deploy.inpainter import Inpainter

    out, trt, cudart = trt_export
    inp = load_inpainter(out, backend="trt", progress=False)
    assert inp.backend.name == "trt" and inp.tile == PLAN["tile"] and inp.chunk == PLAN["chunk"]
    image, mask = random_case(70, 58, seed=4)
    u8 = np.round(image * 255).astype(np.uint8)
    ref = Inpainter(TorchBackend(model), tile=PLAN["tile"])
    ref.set_image(u8, mask)
    expect = ref.inpaint(scale)
    for _ in range(2):  # the second image runs with the staging memory already grown
        syncs, copies = cudart.syncs, dict(cudart.copies)
        inp.set_image(u8, mask)
        got = inp.inpaint(scale)
        assert got.shape == expect.shape and got.dtype == np.uint8
        assert np.abs(got.astype(int) - expect).max() <= 1
        assert cudart.copies["d2h"] - copies["d2h"] == 1  # one download
        # the 8-bit image and the hole indices (the semantic encoder's input is made on the
        # device), and at scale > 1 the tiles' output edges (2 short vectors)
        assert cudart.copies["h2d"] - copies["h2d"] == 2 + (2 if scale > 1 else 0)
    assert cudart.syncs - syncs == 1  # one synchronisation per image
    assert inp.stats["calls"] == len(trt.executions) // 2
    if scale == 1.0:
        assert np.array_equal(got[~mask], u8[~mask])


def test_trt_profiles_are_enforced_with_one_line_errors(trt_export):
    from sair_deploy.api import load_inpainter

    out, trt, cudart = trt_export
    image, mask = random_case(120, 64, seed=1)  # taller than the engines' largest region (96)
    inp = load_inpainter(out, backend="trt", progress=False)
    inp.set_image(image, mask)
    with pytest.raises(InputError, match="outside the TensorRT engine's profile") as err:
        inp.inpaint(2.0)
    assert "\n" not in str(err.value)
    # tiles larger than the engines were built for are refused before they reach an engine
    inp = load_inpainter(out, backend="trt", tile=64, progress=False)
    inp.set_image(*random_case(80, 80, seed=2))
    with pytest.raises(InputError, match="outside the TensorRT engine's profile"):
        inp.inpaint(2.0)
    assert trt.executions  # the engines before the refused one did run


def test_engines_record_their_host_and_are_refused_elsewhere(trt_export, monkeypatch):
    import sair_deploy.backends.trt_backend as trt_backend
    from sair_deploy.backends.trt_backend import TrtBackend
    from sair_deploy.errors import ModelError

    out, trt, cudart = trt_export
    m = load_manifest(out)  # checks every hash, the engines' too
    sec = m["trt"]
    assert sec["tensorrt_version"] == trt.__version__ and sec["gpu"] == "Stand-in GPU"
    assert sec["compute_capability"] == "9.0" and sec["strongly_typed"]
    assert set(sec["engines"]) == set(m["graphs"])
    assert sec["engines"]["tile"]["values"]["box"][2][5] == PLAN["tile"] + 2 * PLAN["margin"]
    assert {"trt/query.engine", "trt/timing.cache"} <= set(m["sha256"])
    # engines built with another TensorRT, or for another GPU, are refused before any GPU work
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(cudart, "11.4.0.106"))
    with pytest.raises(ModelError, match="built with TensorRT 10.13.0.35, this is 11.4.0.106"):
        TrtBackend(out)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_backend, "gpu_info", lambda device=0: {"gpu": "Other GPU", "compute_capability": "8.6"})
    with pytest.raises(ModelError, match="built for Stand-in GPU"):
        TrtBackend(out)
