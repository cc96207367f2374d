"""Shared fixtures: small random models (every code path of the full one) and test images."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sair_deploy.model.checkpoint import save_checkpoint  # noqa: E402
from sair_deploy.model.config import get_config  # noqa: E402
from sair_deploy.model.sair import SAIR  # noqa: E402

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def make_model(seed: int = 0, **changes) -> SAIR:
    """The tiny config with random weights and non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    cfg = get_config("sair-tiny")
    if changes:
        cfg = cfg.replace(**changes)
    model = SAIR(cfg)
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model() -> SAIR:
    return make_model()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model) -> str:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(tiny_model, path)
    return str(path)


def check_fast_paths(model: SAIR, inputs: tuple, coord, cell, atol: float = 1e-5):
    """Assert that the fast path's dense and sparse queries equal the literal ``model.query`` at
    ``coord``/``cell`` for ``inputs = (image, mask, sem_image, sem_valid)``; returns the literal
    answer."""
    from sair_deploy.model.fast import FastSAIR

    fast = FastSAIR(model)
    with torch.no_grad():
        feats = model.encode(*inputs)
        ref = model.query(feats, coord, cell)
        assert torch.allclose(ref, fast.query_dense(feats, coord, cell), atol=atol)
        assert torch.allclose(ref, fast.query_sparse(feats, coord, cell), atol=atol)
    return ref


def random_case(h: int, w: int, seed: int = 0, hole_ratio: float = 0.3):
    """A random image and a mask with holes in the interior, at borders and in corners."""
    rng = np.random.default_rng(seed)
    image = rng.random((h, w, 3), dtype=np.float32)
    mask = rng.random((h, w)) < hole_ratio
    mask[:3, :4] = True
    mask[-2:, -5:] = True
    mask[h // 2, :] = True
    mask[:, -1] = True
    return image, mask
