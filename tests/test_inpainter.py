"""The runtime: fast tiled path == literal path; tiles are faithful; known pixels untouched; the
device budget (graph calls, bytes each way) cannot grow back unnoticed."""

import numpy as np
import pytest

from conftest import make_model, random_case
from sair_deploy.backends.torch_backend import TorchBackend
from sair_deploy.errors import InputError
from sair_deploy.inpainter import Inpainter


@pytest.fixture(scope="module")
def backend(tiny_model):
    return TorchBackend(tiny_model)


def _run(backend, image, mask, scale, dtype=np.float32, **kw):
    inp = Inpainter(backend, **kw)
    inp.set_image(image, mask)
    return inp.inpaint(scale, dtype=dtype)


@pytest.mark.parametrize("size", [(32, 48), (45, 61), (70, 37)])
@pytest.mark.parametrize("scale", [1.0, 1.7, 2.0])
def test_fast_equals_reference(backend, size, scale):
    image, mask = random_case(*size, seed=size[0])
    if size[0] % 4 or size[1] % 4:  # the literal path has no padding: compare on a 4-multiple crop
        h, w = size[0] - size[0] % 4, size[1] - size[1] % 4
        image, mask = image[:h, :w].copy(), mask[:h, :w].copy()
    ref = _run(backend, image, mask, scale, reference=True)
    fast = _run(backend, image, mask, scale, tile=16, chunk=53)
    assert ref.shape == fast.shape == (round(scale * image.shape[0]), round(scale * image.shape[1]), 3)
    assert np.abs(ref - fast).max() <= 1e-5


@pytest.mark.parametrize("changes", [dict(use_semantic=False),
                                     dict(fill="pushpull", residual=True),
                                     dict(fill="onion", residual=True, base="bicubic", use_semantic=False)])
def test_model_options_fast_equal_reference_and_tiles_are_faithful(changes):
    be = TorchBackend(make_model(**changes))
    image, mask = random_case(48, 56, seed=11)
    for scale in (1.0, 1.5):
        ref = _run(be, image, mask, scale, reference=True)
        whole = _run(be, image, mask, scale, tile=512)
        tiled = _run(be, image, mask, scale, tile=16, chunk=29)
        assert np.abs(ref - whole).max() <= 1e-5
        assert np.abs(whole - tiled).max() <= 1e-5


def test_eight_bit_result_is_the_rounded_float_result(backend):
    image, mask = random_case(40, 44, seed=5)
    for scale in (1.0, 1.6):
        inp = Inpainter(backend, tile=16)
        inp.set_image(image, mask)
        u8 = inp.inpaint(scale)
        f = inp.inpaint(scale, dtype=np.float32)
        assert u8.dtype == np.uint8 and u8.shape == f.shape
        assert np.abs(u8.astype(int) - np.round(f * 255)).max() <= 1  # rounding on another device


def test_chunks_do_not_change_the_result(backend):
    image, mask = random_case(40, 44, seed=5)
    ref = _run(backend, image, mask, 1.6, chunk=10**6)
    for chunk in (7, 1024):
        assert np.abs(ref - _run(backend, image, mask, 1.6, chunk=chunk)).max() <= 1e-6


def test_known_pixels_come_back_exactly(backend):
    image, mask = random_case(41, 53)
    out = _run(backend, image, mask, 1.0)
    assert np.array_equal(out[~mask], image[~mask])  # float in, float out
    u8 = np.round(image * 255).astype(np.uint8)
    out8 = _run(backend, u8, mask, 1.0, dtype=np.uint8)
    assert np.array_equal(out8[~mask], u8[~mask])  # 8 bits in, 8 bits out
    assert not np.array_equal(out8[mask], u8[mask])


@pytest.mark.parametrize("scale", [1.0, 1.5])
def test_flips_average_the_mirrored_passes(backend, scale):
    """``flips`` is the mean of the image's own pass and its mirrored passes, mirrored back;
    known pixels still come back exactly and the 8-bit result is that mean, rounded."""
    image, mask = random_case(36, 44, seed=9)
    passes = [np.flip(_run(backend, np.flip(image, ax), np.flip(mask, ax), scale), ax)
              for ax in ((), (1,), (0,), (0, 1))]
    for flips in (2, 4):
        want = sum(passes[:flips]) / np.float32(flips)
        if scale == 1.0:
            want[~mask] = image[~mask]
        got = _run(backend, image, mask, scale, flips=flips, tile=16)
        assert np.abs(got - want).max() <= 1e-5
        assert np.abs(got - passes[0]).max() > 1e-4  # the mirrored passes do change the answer
        u8 = _run(backend, image, mask, scale, dtype=np.uint8, flips=flips)
        assert np.abs(u8.astype(int) - np.round(want * 255)).max() <= 1
    if scale == 1.0:
        assert np.array_equal(got[~mask], image[~mask])
    with pytest.raises(InputError, match="flips"):
        Inpainter(backend, flips=3)


def test_tiled_equals_untiled_with_full_overlap(backend):
    image, mask = random_case(96, 80, seed=3)
    whole = _run(backend, image, mask, 1.3, tile=512)
    tiled = _run(backend, image, mask, 1.3, tile=24)  # overlap defaults to the receptive radius
    assert np.abs(whole - tiled).max() <= 1e-5


@pytest.mark.parametrize("semantic", [True, False])
def test_scale_1_works_on_the_region_around_the_holes(tiny_model, semantic):
    """A small hole in a large image: only its neighbourhood is computed and comes back, and the
    answer equals a run on the whole image for a model without a fill (the fill is regional).
    Only the neighbourhood goes up, unless the model has the semantic branch: its encoder reads
    the whole image, once."""
    model = tiny_model if semantic else make_model(use_semantic=False)
    be = TorchBackend(model)
    rng = np.random.default_rng(0)
    image = rng.random((300, 260, 3), dtype=np.float32)
    mask = np.zeros((300, 260), bool)
    mask[140:150, 100:112] = True
    u8 = np.round(image * 255).astype(np.uint8)
    inp = Inpainter(be, tile=64)
    inp.set_image(u8, mask)
    out = inp.inpaint(1.0)
    if semantic:
        assert u8.nbytes < inp.stats["h2d_bytes"] < 1.01 * u8.nbytes  # the image and the holes
    else:
        assert inp.stats["h2d_bytes"] < 0.5 * u8.nbytes  # far less than the 8-bit image
    assert inp.stats["d2h_bytes"] < 0.5 * u8.nbytes
    ref = _run(be, u8, mask, 1.0, reference=True)  # the literal model on the whole image
    assert np.abs(out[mask].astype(int) - np.round(ref[mask] * 255)).max() <= 1
    assert np.array_equal(out[~mask], u8[~mask])


def test_tiles_are_computed_once_per_region(backend):
    image, mask = random_case(40, 40)
    inp = Inpainter(backend, tile=16)
    inp.set_image(image, mask)
    a = inp.inpaint(2.0)
    tiles = backend.counters.per_graph["tile"]
    b = inp.inpaint(3.0)
    assert backend.counters.per_graph["tile"] == tiles  # the whole image's tiles are cached
    c = inp.inpaint(2.0)
    assert np.array_equal(a, c) and b.shape == (120, 120, 3)


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
    with pytest.raises(InputError, match="overlap"):
        Inpainter(backend, overlap=2)


# ---- the device budget: counted on the zero-cost stand-in (torch's meta device) ----------------
@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_device_budget(scale):
    """Per image: graph calls scale with tiles, the image goes up once and the result comes down
    once. Counted exactly on a stand-in that does no arithmetic (bench/runtime.py's backend)."""
    model = make_model(fill="onion", residual=True)
    be = TorchBackend(model, device="meta")
    be.query_chunk = 1 << 20  # a GPU backend's calls
    h, w = 200, 176
    image, mask = random_case(h, w, seed=2)
    u8 = np.round(image * 255).astype(np.uint8)
    inp = Inpainter(be, tile=64)
    inp.set_image(u8, mask)
    out = inp.inpaint(scale)
    st = inp.stats
    tiles = -(-h // 64) * -(-w // 64)
    # prepare, fill, semantic, one tile and one query call per tile, composite/assemble
    assert st["calls"] <= 4 + 2 * tiles
    assert st["graphs"]["tile"] <= tiles
    given = u8.nbytes + mask.nbytes
    assert st["h2d_bytes"] <= 1.2 * given + 2 * 224 * 224 * 2  # + the semantic encoder's 8-bit input
    assert st["d2h_bytes"] <= 1.2 * out.nbytes
    assert out.shape == (round(h * scale), round(w * scale), 3)
