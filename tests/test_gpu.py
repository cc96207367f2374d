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
