"""Shapes of every module; encode once / query many; fast path == literal path; checkpoints."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from conftest import check_fast_paths, make_model
from sair_deploy.coords import cell_for, make_coord
from sair_deploy.errors import ModelError
from sair_deploy.model.appearance import AppEncoder
from sair_deploy.model.checkpoint import load_checkpoint, read_config, save_checkpoint
from sair_deploy.model.config import SAIRConfig, get_config
from sair_deploy.model.fast import FastSAIR
from sair_deploy.preprocess import semantic_input, semantic_size


def _inputs(b, h, w, max_side=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(b, 3, h, w, generator=g)
    mask = (torch.rand(b, 1, h, w, generator=g) < 0.3).float()
    sem = [semantic_input(image[i].permute(1, 2, 0).numpy(), mask[i, 0].numpy(), max_side) for i in range(b)]
    sem_image = torch.from_numpy(np.stack([s[0] for s in sem]))
    sem_valid = torch.from_numpy(np.stack([s[1] for s in sem]))
    return image, mask, sem_image, sem_valid


@pytest.mark.parametrize("size", [(32, 32), (40, 52), (64, 100)])
def test_shapes_and_dtypes_of_every_module(tiny_model, size):
    h, w = size
    cfg = tiny_model.cfg
    image, mask, sem_image, sem_valid = _inputs(2, h, w)
    with torch.no_grad():
        feats = tiny_model.encode(image, mask, sem_image, sem_valid)
        sh, sw = semantic_size(h, w, cfg.semantic.max_side)
        assert feats.embedding.shape == (2, cfg.semantic.embed_dim, sh // 16, sw // 16)
        assert feats.holes.shape == (2, 1, sh // 16, sw // 16)
        assert 0 <= feats.holes.min() and feats.holes.max() <= 1
        assert feats.app.shape == (2, cfg.app.out_channels, h, w)
        coord = torch.rand(2, 17, 2) * 2 - 1
        s = tiny_model.semantic_at(feats, coord, torch.tensor([[[0.1, 0.1]]]))
        assert s.shape == (2, 17, cfg.semantic.embed_dim)
        rgb = tiny_model.query(feats, coord, torch.tensor([[[0.05, 0.05]]]))
        assert rgb.shape == (2, 17, 3)
    for t in (feats.embedding, feats.holes, feats.app, s, rgb):
        assert t.dtype == torch.float32 and torch.isfinite(t).all()


def test_app_encoder_rejects_sizes_not_multiple_of_4():
    enc = AppEncoder(get_config("sair-tiny").app)
    with pytest.raises(ValueError, match="multiple of 4"):
        enc(torch.rand(1, 3, 30, 32), torch.zeros(1, 1, 30, 32))


def test_encode_once_query_many_equals_one_forward(tiny_model):
    image, mask, sem_image, sem_valid = _inputs(1, 36, 44)
    coord = torch.from_numpy(make_coord((72, 88)))[None]
    cell = torch.from_numpy(cell_for((72, 88)))[None]
    with torch.no_grad():
        whole = tiny_model(image, mask, sem_image, sem_valid, coord, cell)
        feats = tiny_model.encode(image, mask, sem_image, sem_valid)
        parts = torch.cat([tiny_model.query(feats, c, cell) for c in coord.split(1000, dim=1)], dim=1)
    assert torch.allclose(whole, parts, atol=1e-6)


@pytest.mark.parametrize("use_semantic", [True, False])
@pytest.mark.parametrize("unfold", [True, False])
def test_fast_paths_equal_the_literal_path(use_semantic, unfold):
    model = make_model(use_semantic=use_semantic, sir_unfold=unfold)
    image, mask, sem_image, sem_valid = _inputs(2, 28, 36)
    coord = torch.rand(2, 400, 2) * 2 - 1
    cell = torch.tensor([[[2 / 50, 2 / 61]]])
    check_fast_paths(model, (image, mask, sem_image, sem_valid), coord, cell)


@pytest.mark.parametrize("rows", [7, 40])  # 40 x 37 centres: more than one CPU piece
def test_semantic_term_of_a_tile_equals_the_general_one(rows):
    """The tile graph's separable, channels-last semantic term against the general one at the
    same centres (a window of a larger image, so rows and columns start off the origin)."""
    from sair_deploy.model.liif import pixel_centres

    model = make_model(use_semantic=True)
    image, mask, sem_image, sem_valid = _inputs(1, 64, 80)
    fast = FastSAIR(model)
    ys = pixel_centres(torch.tensor(64.0), 9, rows)
    xs = pixel_centres(torch.tensor(80.0), 40, 37)
    centres = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(1, -1, 2)
    cell = torch.tensor([[[2 / 64, 2 / 80]]])
    with torch.no_grad():
        feats = model.encode(image, mask, sem_image, sem_valid)
        sem_pre = fast.semantic_precompute(feats.embedding, feats.holes)
        ref = fast.semantic_term(sem_pre, centres, cell)
        grid = fast.semantic_term_grid(sem_pre, ys, xs, cell)
    assert grid.shape == ref.shape == (1, model.air.mlp.linears[0].out_features, rows * 37)
    assert torch.allclose(grid, ref, atol=1e-5)


@pytest.mark.parametrize("rows", [16, 37])
def test_the_exported_semantic_term_loop_equals_the_whole_term(rows):
    """Exported tile graphs add the semantic term in a loop over bands of 8 rows (ONNX ``Scan``,
    each band's ensemble through the folded product with its rows of the block as the addend;
    the block's rows rounded up to whole bands): the same numbers as all rows at once, run here
    eagerly through the same loop."""
    from sair_deploy.model.bands import add_semantic_bands, banded_rows, semantic_band
    from sair_deploy.model.fast import EXPORT_BAND_ROWS, _hidden_rows
    from sair_deploy.model.liif import pixel_centres

    model = make_model(use_semantic=True)
    image, mask, sem_image, sem_valid = _inputs(1, 64, 80)
    fast = FastSAIR(model)
    ys = pixel_centres(torch.tensor(64.0), 5, rows)
    xs = pixel_centres(torch.tensor(80.0), 11, 29)
    with torch.no_grad():
        feats = model.encode(image, mask, sem_image, sem_valid)
        sem_pre = fast.semantic_precompute(feats.embedding, feats.holes)
        lat, nb, row_terms, col_terms = fast._semantic_grid(sem_pre, ys, xs, torch.tensor([[[2 / 64, 2 / 80]]]))
        w_t = fast._fold(sem_pre)[0].t()
        hidden = lambda h: _hidden_rows(h, model.sir.mlp.linears[1:-1])  # noqa: E731
        args = (lat, nb.rows, nb.cols, torch.stack(row_terms), torch.stack(col_terms), nb.weight.view(4, rows, 29))
        whole = semantic_band(*args, slice(None), hidden)[0] @ w_t  # (rows * 29, C)
        padded = banded_rows(rows, EXPORT_BAND_ROWS)
        p = torch.randn(1, padded, 29, w_t.shape[1])
        looped = add_semantic_bands(p, *args, hidden, w_t, EXPORT_BAND_ROWS)
    assert padded == (16 if rows == 16 else 40)
    assert looped.shape == p.shape
    assert torch.allclose(looped[:, :rows].reshape(-1, w_t.shape[1]), p[:, :rows].reshape(-1, w_t.shape[1]) + whole,
                          atol=1e-5)


@pytest.mark.parametrize("residual", [False, True])
def test_the_exported_rows_formula_equals_the_eager_paths(residual):
    """Exported query graphs read a block as rows: a Gather of whole rows per neighbour and the MLP
    on them (``fast._ensemble_rows_graph``; a residual's base channels ride through with zero
    weights, so the table is never sliced; the hidden layers as products without a bias and a max,
    their bias carried to the RGB layer's): the colours of ``query``'s eager paths."""
    from sair_deploy.model import fast as fast_mod
    from sair_deploy.model.liif import local_neighbours, rows_gather, sample_base, scale_cell

    changes = {"use_semantic": True, **({"fill": "onion", "residual": True, "base": "lanczos"} if residual else {})}
    model = make_model(**changes)
    image, mask, sem_image, sem_valid = _inputs(1, 28, 36)
    coord = torch.rand(1, 700, 2) * 1.6 - 0.8
    cell = torch.tensor([[[2 / 50, 2 / 61]]])
    fast = FastSAIR(model)
    with torch.no_grad():
        pre = fast.precompute(model.encode(image, mask, sem_image, sem_valid))
        grid = torch.tensor([28.0, 36.0, 0.0, 0.0])
        ref = fast.query(pre, grid, coord, cell)
        row, col, rel, weight = fast_mod._neighbour_major(local_neighbours(coord, grid[:2]))
        _, _, w_rel, w_cell, _ = fast._air_first()
        lins = model.air.mlp.linears
        table = pre.permute(0, 2, 3, 1)
        got = fast_mod._ensemble_rows_graph(table, row, col, rel, weight, w_rel,
                                            scale_cell(cell, grid[:2]) @ w_cell.T, lins[1:-1], lins[-1])
        if residual:
            got = got + sample_base(rows_gather(table, table.shape[-1] - 3, 3), coord, "lanczos", size=grid[:2])
    assert torch.allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize("gpu_formula", [False, True])
@pytest.mark.parametrize("residual", [False, True])
def test_channels_last_and_channels_first_blocks_answer_alike(residual, gpu_formula, monkeypatch):
    """Eagerly a block's precompute is channels last and queries gather rows of it
    (_ensemble_rows); training's channels-first blocks are read by _ensemble_cf. Both layouts
    of the same block give the same colours: a batch of 2, more queries than one CPU piece, the
    residual's base channels included. ``gpu_formula``: the arithmetic the rows path uses on a
    CUDA GPU (cuBLASLt's bias + ReLU epilogue through ``torch._addmm_activation``, whole calls,
    the cell term in the table, the coordinate term as a product, the RGB layer per neighbour),
    run on this CPU."""
    from sair_deploy.model import fast as fast_mod

    if gpu_formula:
        monkeypatch.setattr(fast_mod, "_gpu_rows", lambda t: True)

    changes = {"use_semantic": True, **({"fill": "onion", "residual": True} if residual else {})}
    model = make_model(**changes)
    image, mask, sem_image, sem_valid = _inputs(2, 28, 36)
    coord = torch.rand(2, fast_mod.CPU_QUERY_PIECE + 300, 2) * 2 - 1
    cell = torch.tensor([[[2 / 50, 2 / 61]]])
    fast = FastSAIR(model)
    with torch.no_grad():
        feats = model.encode(image, mask, sem_image, sem_valid)
        pre = fast.precompute(feats)
        assert fast_mod._is_rows(pre)
        grid = torch.tensor([28.0, 36.0, 0.0, 0.0])
        rows = fast.query(pre, grid, coord, cell)
        cf = fast.query(pre.contiguous(), grid, coord, cell)
        ref = model.query(feats, coord, cell)
    assert torch.allclose(rows, cf, atol=1e-5)
    assert torch.allclose(rows, ref, atol=1e-5)


@pytest.mark.parametrize("gpu_formula", [False, True])
@pytest.mark.parametrize("base", ["bilinear", "bicubic", "lanczos"])
def test_query_on_a_grid_equals_query_at_its_coordinates(base, gpu_formula, monkeypatch):
    """The query graph answers an output rectangle with neighbours and the base's filter taps
    found per axis (``query_grid``); that equals ``query`` at the rectangle's coordinates, on a
    block that starts inside a larger image, in both block layouts."""
    from sair_deploy.model import fast as fast_mod
    from sair_deploy.model.liif import pixel_centres

    if gpu_formula:
        monkeypatch.setattr(fast_mod, "_gpu_rows", lambda t: True)
    model = make_model(use_semantic=True, fill="onion", residual=True, base=base)
    image, mask, sem_image, sem_valid = _inputs(1, 28, 36)
    fast = FastSAIR(model)
    with torch.no_grad():
        pre = fast.precompute(model.encode(image, mask, sem_image, sem_valid))
        block = pre[:, :, 6:24, 5:33]  # rows 6.., cols 5.. of the image
        out_h, out_w = 57, 73  # an odd scale: the rectangle's pixels fall anywhere between latents
        ys = pixel_centres(torch.tensor(float(out_h)), 20, 21)
        xs = pixel_centres(torch.tensor(float(out_w)), 17, 39)
        grid = torch.tensor([28.0, 36.0, 6.0, 5.0])
        cell = torch.tensor([[[2 / out_h, 2 / out_w]]])
        coord = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(1, -1, 2)
        for layout in (block.contiguous(memory_format=torch.channels_last), block.contiguous()):
            got = fast.query_grid(layout, grid, ys, xs, cell)
            assert got.shape == (1, 21 * 39, 3)
            assert torch.allclose(got, fast.query(layout, grid, coord, cell), atol=1e-5)
        assert torch.allclose(got, model.query(model.encode(image, mask, sem_image, sem_valid), coord, cell),
                              atol=1e-5)


@pytest.mark.parametrize("gpu_formula", [False, True])
def test_fast_paths_take_a_cell_per_query(gpu_formula, monkeypatch):
    """Training queries each sample at its own scale: a cell per query, not one per call (on the
    rows path too, with a CPU's or a GPU's arithmetic)."""
    from sair_deploy.model import fast as fast_mod

    if gpu_formula:
        monkeypatch.setattr(fast_mod, "_gpu_rows", lambda t: True)
    model = make_model(use_semantic=True)
    image, mask, sem_image, sem_valid = _inputs(2, 28, 36)
    coord = torch.rand(2, 300, 2) * 2 - 1
    cell = (torch.rand(2, 300, 1) * 0.1 + 0.02).expand(2, 300, 2).contiguous()
    check_fast_paths(model, (image, mask, sem_image, sem_valid), coord, cell)


def test_fast_path_has_gradients_like_the_literal_path():
    model = make_model().train()
    image, mask, sem_image, sem_valid = _inputs(1, 20, 24)
    coord = torch.rand(1, 50, 2) * 2 - 1
    cell = torch.tensor([[[0.1, 0.1]]])
    grads = []
    for fn in (model.query, FastSAIR(model).query_sparse):
        model.zero_grad()
        fn(model.encode(image, mask, sem_image, sem_valid), coord, cell).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-4, rtol=1e-3)


def test_checkpoint_round_trip_rebuilds_the_model(tmp_path, tiny_model):
    path = tmp_path / "m.safetensors"
    save_checkpoint(tiny_model, path)
    assert read_config(path) == tiny_model.cfg
    loaded = load_checkpoint(path)
    image, mask, sem_image, sem_valid = _inputs(1, 32, 32)
    coord = torch.rand(1, 64, 2) * 2 - 1
    cell = torch.tensor([[[0.05, 0.05]]])
    with torch.no_grad():
        a = tiny_model(image, mask, sem_image, sem_valid, coord, cell)
        b = loaded(image, mask, sem_image, sem_valid, coord, cell)
    assert torch.equal(a, b)
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temp file


def test_config_round_trips_through_json():
    for name in ("sair-b16", "sair-small", "sair-tiny"):
        cfg = get_config(name)
        assert SAIRConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown"):
        SAIRConfig.from_dict({"bogus": 1})


def test_corrupt_and_foreign_checkpoints_are_refused(tmp_path, tiny_checkpoint):
    data = open(tiny_checkpoint, "rb").read()
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="corrupt"):
        load_checkpoint(trunc)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelError, match="corrupt|not a safetensors"):
        load_checkpoint(garbage)
    from safetensors.torch import save_file
    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(1)}, str(other), metadata={"format": "sair-deploy-checkpoint",
                                                            "format_version": "99", "config": "{}"})
    with pytest.raises(ModelError, match="format version 99"):
        load_checkpoint(other)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(1)}, str(foreign))
    with pytest.raises(ModelError, match="not a sair-deploy checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(ModelError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_fast_path_with_a_different_cell_per_image():
    model = make_model()
    image, mask, sem_image, sem_valid = _inputs(2, 24, 28)
    coord = torch.rand(2, 30, 2) * 2 - 1
    cell = torch.tensor([[[0.02, 0.03]], [[0.05, 0.04]]])
    with torch.no_grad():
        feats = model.encode(image, mask, sem_image, sem_valid)
        assert torch.allclose(model.query(feats, coord, cell), FastSAIR(model).query_sparse(feats, coord, cell),
                              atol=1e-5)


@pytest.mark.parametrize("use_semantic,fill", [(True, "pushpull"), (False, "pushpull"),
                                               (False, "onion")])
def test_fill_and_residual_paths_agree(use_semantic, fill):
    model = make_model(use_semantic=use_semantic, fill=fill, residual=True)
    image, mask, sem_image, sem_valid = _inputs(2, 28, 36)
    coord = torch.rand(2, 300, 2) * 2 - 1
    cell = torch.tensor([[[2 / 50, 2 / 61]]])
    with torch.no_grad():
        assert model.encode(image, mask, sem_image, sem_valid).base is not None
    check_fast_paths(model, (image, mask, sem_image, sem_valid), coord, cell)


def test_push_pull_keeps_known_pixels_and_fills_from_neighbours():
    from sair_deploy.model.fill import push_pull

    image = torch.zeros(1, 3, 32, 40)
    image[..., :20] = 1.0  # left half white, right half black
    mask = torch.zeros(1, 1, 32, 40)
    mask[..., 8:24, 12:28] = 1
    out = push_pull(image, mask)
    known = mask == 0
    assert torch.equal(out.expand_as(image)[known.expand_as(image)], image[known.expand_as(image)])
    assert out[0, 0, 16, 13] > 0.7 and out[0, 0, 16, 26] < 0.3  # each side takes its neighbours' colour
    assert ((out >= 0) & (out <= 1)).all()


def test_onion_fill_keeps_regions_apart_and_known_pixels():
    from sair_deploy.model.fill import onion_fill, push_pull

    image = torch.zeros(1, 3, 64, 80)
    image[..., :40] = 1.0  # left half white, right half black
    mask = torch.zeros(1, 1, 64, 80)
    mask[..., 8:56, 16:64] = 1  # a big hole across the edge
    out = onion_fill(image, mask)
    known = (mask == 0).expand_as(image)
    assert torch.equal(out[known], image[known])
    assert ((out >= 0) & (out <= 1)).all() and torch.isfinite(out).all()
    # each side keeps its own colour deep into the hole; push-pull blurs them together
    assert out[0, 0, 32, 22] > 0.9 and out[0, 0, 32, 58] < 0.1
    pp = push_pull(image, mask)
    assert (out[0, 0, 32, 22] - out[0, 0, 32, 58]) > (pp[0, 0, 32, 22] - pp[0, 0, 32, 58])
    # a hole with no known pixel at all comes out mid grey, not NaN
    assert torch.allclose(onion_fill(image, torch.ones(1, 1, 64, 80)), torch.full_like(image, 0.5),
                          atol=1e-3)


def test_residual_needs_a_fill():
    with pytest.raises(ValueError, match="pushpull"):
        get_config("sair-tiny").replace(residual=True)


@pytest.mark.parametrize("size,region", [((300, 260), (40, 200, 30, 190)), ((20, 37), (0, 20, 0, 37)),
                                         ((224, 224), (5, 100, 0, 224))])
def test_the_semantic_graphs_input_is_the_hosts(size, region):
    """The semantic graph makes the encoder's input on the device from the whole 8-bit image and
    a region's hole list (``graphs.semantic_pixels``): the pixels ``preprocess.semantic_input``
    (Pillow, which training uses) makes on the host, to the 8-bit level. Reductions, the
    rounding to a multiple of the patch size, and an image already the right size."""
    from skimage import data

    from sair_deploy.model.graphs import semantic_pixels

    h, w = size
    image = np.ascontiguousarray(data.astronaut()[:h, :w])
    r0, rh, c0, rw = region
    mask = np.zeros((h, w), dtype=bool)
    rng = np.random.default_rng(3)
    mask[r0:r0 + rh, c0:c0 + rw] = rng.random((rh, rw)) < 0.3
    mask[r0 + rh // 3:r0 + rh // 2, c0 + rw // 4:c0 + rw // 2] = True
    sh, sw = semantic_size(h, w, 224, 16)
    ref_image, ref_valid = semantic_input(image / np.float32(255), mask, 224, 16)
    holes = np.flatnonzero(mask[r0:r0 + rh, c0:c0 + rw])
    holes = torch.from_numpy(np.append(holes, rh * rw).astype(np.int32))
    plan = torch.tensor([r0, rh, c0, rw, sh // 16, sw // 16])
    got_image, got_valid = semantic_pixels(torch.from_numpy(image[None]), holes, plan, 16)
    for ref, got in ((ref_image, got_image), (ref_valid, got_valid)):
        ref = np.round(ref * 255)
        got = np.round(got[0].numpy() * 255)
        assert got.shape == ref.shape == (ref.shape[0], sh, sw)
        # 8-bit pixels averaged land on half levels often; float32 sums here, float64 in Pillow,
        # so such a tie may round either way (the sums agree to 1e-7)
        assert np.abs(got - ref).max() <= 1
        assert (got == ref).mean() > 0.99


def test_for_inference_folds_batchnorm_and_leaves_the_model_alone():
    """The torch backend's graphs run ``SAIR.for_inference()``: BatchNorms folded into the
    convolutions before them, the same features; the model itself keeps its norms and weights."""
    from sair_deploy.model.appearance import fold_batchnorm

    model = make_model(seed=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    infer = model.for_inference()
    folded = infer.app_encoder
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.app_encoder.modules()) == 2 * model.cfg.app.res_blocks
    assert infer.air is model.air and infer.app_encoder is not model.app_encoder
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    image, mask = torch.rand(2, 3, 32, 40), (torch.rand(2, 1, 32, 40) > 0.7).float()
    with torch.no_grad():
        ref, out = model.app_encoder(image, mask), folded(image, mask)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4)
    # instance norm has nothing to fold
    inst = AppEncoder(dataclasses.replace(get_config("sair-tiny").app, norm="instance"))
    assert sum(isinstance(m, torch.nn.InstanceNorm2d) for m in fold_batchnorm(inst).modules()) == 2 * inst.cfg.res_blocks


def test_exported_encoder_runs_transposed_convolutions_as_convolutions():
    """Exported graphs trace ``SAIR.for_export``: each ConvTranspose2d of the AppEncoder as one
    convolution over its four output phases, interleaved (ONNX Runtime's ConvTranspose was 2x
    slower). The same features; the model itself keeps its layers."""
    from torch import nn

    from sair_deploy.model.appearance import PhaseConvTranspose

    model = make_model()
    exported = model.for_export()
    swapped = [m for m in exported.app_encoder.net if isinstance(m, PhaseConvTranspose)]
    assert len(swapped) == 2 and not any(isinstance(m, PhaseConvTranspose) for m in model.app_encoder.net)
    assert exported.sir is model.sir  # the rest is shared
    image, mask, _, _ = _inputs(2, 20, 28)
    with torch.no_grad():
        assert torch.allclose(exported.encode_appearance(image, mask), model.encode_appearance(image, mask), atol=1e-5)
        odd = nn.ConvTranspose2d(3, 5, 4, 2, 1, bias=False)
        x = torch.randn(1, 3, 7, 9)
        assert torch.allclose(PhaseConvTranspose(odd)(x), odd(x), atol=1e-6)
    with pytest.raises(ValueError):
        PhaseConvTranspose(nn.ConvTranspose2d(3, 5, 3, 2, 1))


def test_hidden_graph_is_the_hidden_layers_with_their_bias_carried():
    """The exported graphs' hidden layers (``fast.hidden_graph``: products without a bias, a max
    against a constant, the bias carried forward) plus the carried bias ``fast.graph_layers``
    returns are the plain ``relu(W h + b)`` layers, for activations of either sign around the
    biases."""
    from sair_deploy.model.fast import graph_layers, hidden_graph

    torch.manual_seed(0)
    layers = [torch.nn.Linear(24, 32), torch.nn.Linear(32, 32), torch.nn.Linear(32, 16)]
    h = torch.relu(torch.randn(500, 24))
    with torch.no_grad():
        ref = h
        for lin in layers:
            ref = torch.relu(lin(ref))
        graph, carried = graph_layers([(lin.weight, lin.bias) for lin in layers])
        got = hidden_graph(h, graph) + carried
    assert (ref == 0).float().mean() > 0.2  # the ReLUs do cut
    assert torch.allclose(got, ref, atol=1e-5)
    assert graph_layers([]) == ([], None) and hidden_graph(h, []) is h
