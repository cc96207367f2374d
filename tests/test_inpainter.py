"""The runtime: fast tiled path == literal path; tiles are faithful; known pixels untouched."""

import numpy as np
import pytest

from conftest import make_model, random_case
from sair_deploy.backends.torch_backend import TorchBackend
from sair_deploy.errors import InputError
from sair_deploy.inpainter import Inpainter


@pytest.fixture(scope="module")
def backend(tiny_model):
    return TorchBackend(tiny_model)


def _run(backend, image, mask, scale, **kw):
    inp = Inpainter(backend, **kw)
    inp.set_image(image, mask)
    return inp.inpaint(scale)


@pytest.mark.parametrize("size", [(32, 48), (45, 61), (70, 37)])
@pytest.mark.parametrize("scale", [1.0, 1.7, 2.0])
def test_fast_equals_reference(backend, size, scale):
    image, mask = random_case(*size, seed=size[0])
    if size[0] % 4 or size[1] % 4:  # the literal path has no padding: compare on a 4-multiple crop
        h, w = size[0] - size[0] % 4, size[1] - size[1] % 4
        image, mask = image[:h, :w].copy(), mask[:h, :w].copy()
    ref = _run(backend, image, mask, scale, reference=True)
    fast = _run(backend, image, mask, scale, block=16, tile=32)
    assert ref.shape == fast.shape == (round(scale * image.shape[0]), round(scale * image.shape[1]), 3)
    assert np.abs(ref - fast).max() <= 1e-5


def test_no_semantic_model_runs_the_same_paths():
    be = TorchBackend(make_model(use_semantic=False))
    image, mask = random_case(32, 40)
    ref = _run(be, image, mask, 1.5, reference=True)
    fast = _run(be, image, mask, 1.5, block=16)
    assert np.abs(ref - fast).max() <= 1e-5


@pytest.mark.parametrize("piece", [None, 7, 1024])
def test_cpu_pieces_and_chunks_do_not_change_the_result(tiny_model, piece):
    # the CPU backends answer a call in cache-sized pieces; the runtime calls in chunks
    image, mask = random_case(40, 44, seed=5)
    one = TorchBackend(tiny_model)
    one.query_piece = None
    split = TorchBackend(tiny_model)
    split.query_piece = piece
    ref = _run(one, image, mask, 1.6, chunk=10**6)
    out = _run(split, image, mask, 1.6, chunk=29)
    assert np.abs(ref - out).max() <= 1e-6


def test_known_pixels_unchanged_at_scale_1(backend):
    image, mask = random_case(41, 53)
    out = _run(backend, image, mask, 1.0)
    assert np.array_equal(out[~mask], image[~mask])
    assert not np.array_equal(out[mask], image[mask])


def test_tiled_equals_untiled_with_full_overlap(backend):
    image, mask = random_case(96, 80, seed=3)
    whole = _run(backend, image, mask, 1.3, tile=512)
    tiled = _run(backend, image, mask, 1.3, tile=24)  # overlap defaults to the receptive radius
    assert np.abs(whole - tiled).max() <= 1e-5


def test_small_overlap_blends_without_visible_seams(backend):
    # a smooth image: with a too-small overlap, tiles differ, but blending keeps the output smooth
    h, w = 96, 96
    yy, xx = np.mgrid[0:h, 0:w] / 96.0
    image = np.stack([0.3 + 0.4 * xx, 0.2 + 0.5 * yy, 0.5 + 0.2 * xx * yy], -1).astype(np.float32)
    mask = np.zeros((h, w), bool)
    mask[20:76, 20:76] = True
    whole = _run(backend, image, mask, 1.0, tile=512)
    tiled = _run(backend, image, mask, 1.0, tile=32, overlap=4)
    grad_whole = np.abs(np.diff(whole, axis=1)).max()
    grad_tiled = np.abs(np.diff(tiled, axis=1)).max()
    assert grad_tiled <= grad_whole * 1.5 + 0.02
    assert np.abs(whole - tiled).mean() < 0.02


def test_features_are_reused_across_scales(backend):
    image, mask = random_case(40, 40)
    inp = Inpainter(backend, block=16)
    inp.set_image(image, mask)
    a = inp.inpaint(1.0)
    calls = []
    original = backend.appearance
    backend.appearance = lambda *x: calls.append(1) or original(*x)
    try:
        b = inp.inpaint(2.0)
        c = inp.inpaint(1.0)
    finally:
        backend.appearance = original
    assert calls == []  # the one tile was computed during the first call
    assert np.array_equal(a, c) and b.shape == (80, 80, 3)


def test_bad_scale_and_sizes_are_refused(backend):
    image, mask = random_case(32, 32)
    inp = Inpainter(backend)
    inp.set_image(image, mask)
    for s in (0.5, float("nan"), float("inf")):
        with pytest.raises(InputError, match="scale"):
            inp.inpaint(s)
    with pytest.raises(InputError, match="too large"):
        inp.inpaint(1000.0)
    with pytest.raises(InputError, match="does not match"):
        inp.set_image(image, mask[:10])


def test_fill_residual_model_fast_equals_reference_and_tiles_are_faithful():
    be = TorchBackend(make_model(fill="pushpull", residual=True))
    image, mask = random_case(48, 56, seed=11)
    ref = _run(be, image, mask, 1.5, reference=True)
    fast = _run(be, image, mask, 1.5, block=16)
    tiled = _run(be, image, mask, 1.5, block=16, tile=16)
    assert np.abs(ref - fast).max() <= 1e-5
    assert np.abs(fast - tiled).max() <= 1e-5
