"""CUDA checks of the torch backend (run with `python -m pytest -m gpu` on a GPU host)."""

import numpy as np
import pytest
import torch

from conftest import random_case
from sair_deploy.backends.torch_backend import TorchBackend
from sair_deploy.inpainter import Inpainter

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _run(backend, image, mask, scale, **kw):
    inp = Inpainter(backend, **kw)
    inp.set_image(image, mask)
    return inp.inpaint(scale, dtype=np.float32)


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_cuda_matches_cpu(tiny_model, scale):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    image, mask = random_case(64, 80, seed=5)
    cpu = _run(TorchBackend(tiny_model), image, mask, scale)
    gpu = _run(TorchBackend(tiny_model, device="cuda"), image, mask, scale)
    assert np.abs(cpu - gpu).max() <= 1e-3


def test_cuda_fast_equals_reference(tiny_model):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    be = TorchBackend(tiny_model, device="cuda")
    image, mask = random_case(48, 64, seed=9)
    ref = _run(be, image, mask, 1.5, reference=True)
    fast = _run(be, image, mask, 1.5, tile=32)
    assert np.abs(ref - fast).max() <= 1e-4


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_cuda_rows_path_equals_channels_first(tiny_model, scale, monkeypatch):
    """On CUDA a tile's precompute is channels last and queries gather rows through fused
    bias + ReLU products (fast.GPU_ROWS); the channels-first path gives the same image."""
    from sair_deploy.model import fast as fast_mod

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    image, mask = random_case(64, 80, seed=11)
    be = TorchBackend(tiny_model, device="cuda")
    rows = _run(be, image, mask, scale, tile=32)
    monkeypatch.setattr(fast_mod, "GPU_ROWS", False)
    cf = _run(be, image, mask, scale, tile=32)
    assert np.abs(rows - cf).max() <= 1e-4


def test_cuda_fp16_rows_path_near_fp32(tiny_model):
    """float16 on the rows path stays within 8-bit rounding of float32 on this random model."""
    image, mask = random_case(64, 80, seed=12)
    fp32 = _run(TorchBackend(tiny_model, device="cuda"), image, mask, 2.0, tile=32)
    fp16 = _run(TorchBackend(tiny_model, device="cuda", fp16=True), image, mask, 2.0, tile=32)
    assert np.isfinite(fp16).all()
    assert np.abs(fp32 - fp16).max() <= 2e-2


def test_cuda_graph_calls_do_not_block_the_host(tiny_model):
    """Between the one upload and the one download no graph call synchronises with the GPU: a
    blocking copy of a plan vector would make the host wait for the GPU's queue to drain at every
    call instead of queueing the next one (torch's sync debug mode raises on such a call)."""
    be = TorchBackend(tiny_model, device="cuda", fp16=True)
    run = be.run

    def strict(graph, *inputs):
        torch.cuda.set_sync_debug_mode("error")
        try:
            return run(graph, *inputs)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    be.run = strict
    image, mask = random_case(64, 80, seed=13)
    for scale in (1.0, 2.0):
        assert np.isfinite(_run(be, image, mask, scale, tile=32)).all()


def _onnx_cuda() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.skipif(not _onnx_cuda(), reason="needs onnxruntime-gpu")
@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_onnx_runtime_cuda_matches_torch(scale):
    """ONNX Runtime's CUDA provider through IO binding (device handles from graph to graph, query
    answers written into rows of one device buffer) gives the torch backend's image, on the
    bundled model and its export; the 8-bit result too."""
    from sair_deploy.api import DEFAULT_CHECKPOINT, DEFAULT_EXPORT
    from sair_deploy.backends.onnx_backend import OnnxBackend

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ort_be = OnnxBackend(DEFAULT_EXPORT, device="cuda", precision="fp32")
    assert ort_be.name == "onnx-cuda"
    torch_be = TorchBackend.from_checkpoint(DEFAULT_CHECKPOINT, "cuda")
    image, mask = random_case(96, 120, seed=17)
    got = _run(ort_be, image, mask, scale, tile=64)
    ref = _run(torch_be, image, mask, scale, tile=64)
    assert np.abs(got - ref).max() <= 2e-3
    inp = Inpainter(ort_be, tile=64)
    inp.set_image(image, mask)
    u8 = inp.inpaint(scale)
    assert u8.dtype == np.uint8 and np.abs(u8.astype(np.float32) / 255 - ref).max() <= 2 / 255 + 2e-3
    assert inp.stats["calls"] <= 16
