"""The classical fills (biharmonic, onion) and the bicubic base of a residual AIR."""

import numpy as np
import pytest
import torch

from conftest import check_fast_paths, make_model
from sair_deploy.model.config import get_config
from sair_deploy.model.fill import biharmonic_fill, onion_fill, push_pull
from sair_deploy.preprocess import semantic_input


def _hole(h=48, w=64):
    mask = torch.zeros(1, 1, h, w)
    mask[..., h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1
    return mask


def test_biharmonic_fill_keeps_known_pixels_and_continues_gradients():
    h, w = 48, 64
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    ramp = torch.stack([xx, yy, 0.5 * (xx + yy)])[None]  # linear: biharmonic (and harmonic) in the hole
    mask = _hole(h, w)
    out = biharmonic_fill(ramp, mask)
    known = (mask == 0).expand_as(ramp)
    assert torch.equal(out[known], ramp[known])
    hole = ~known
    err = (out - ramp)[hole].abs().max().item()
    assert err < 0.02, err
    assert err < (push_pull(ramp, mask) - ramp)[hole].abs().max().item()  # the mean pyramid sags
    # nothing known at all: mid grey, finite
    assert torch.allclose(biharmonic_fill(ramp, torch.ones(1, 1, h, w)), torch.full_like(ramp, 0.5),
                          atol=1e-3)


def test_fills_accept_any_size_and_config_names_them():
    for h, w in ((1, 1), (2, 3), (5, 1), (37, 29)):
        image, mask = torch.rand(1, 3, h, w), (torch.rand(1, 1, h, w) > 0.5).float()
        for fill in (onion_fill, biharmonic_fill):
            out = fill(image, mask)
            assert out.shape == image.shape and torch.isfinite(out).all()
    cfg = get_config("sair-small").replace(fill="biharmonic", base="bicubic")
    assert cfg.to_dict()["base"] == "bicubic"
    with pytest.raises(ValueError, match="base must be"):
        cfg.replace(base="nearest")
    with pytest.raises(ValueError, match="fill must be"):
        cfg.replace(fill="telea")
    old = cfg.to_dict()
    del old["base"]  # a checkpoint from before the option loads with the old behaviour
    assert type(cfg).from_dict(old).base == "bilinear"


@pytest.mark.parametrize("use_semantic,fill", [(False, "onion"), (True, "biharmonic")])
def test_fast_paths_equal_the_literal_path_with_a_bicubic_base(use_semantic, fill):
    model = make_model(use_semantic=use_semantic, fill=fill, residual=True, base="bicubic")
    g = torch.Generator().manual_seed(3)
    image = torch.rand(2, 3, 28, 36, generator=g)
    mask = (torch.rand(2, 1, 28, 36, generator=g) < 0.3).float()
    sem = [semantic_input(image[i].permute(1, 2, 0).numpy(), mask[i, 0].numpy(), 64) for i in range(2)]
    sem_image = torch.from_numpy(np.stack([s[0] for s in sem]))
    sem_valid = torch.from_numpy(np.stack([s[1] for s in sem]))
    coord = torch.rand(2, 300, 2, generator=g) * 2 - 1
    coord[:, :4] = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [-1.0, 0.3], [0.99, -0.999]])
    cell = torch.tensor([[[2 / 50, 2 / 61]]])
    ref = check_fast_paths(model, (image, mask, sem_image, sem_valid), coord, cell)
    # the bicubic base differs from the bilinear one off the pixel centres
    bilinear = make_model(use_semantic=use_semantic, fill=fill, residual=True)
    with torch.no_grad():
        assert not torch.allclose(ref, bilinear.query(bilinear.encode(image, mask, sem_image, sem_valid),
                                                      coord, cell), atol=1e-3)


def test_biharmonic_fill_graph_exports_as_loops(tmp_path):
    """Each repeated step is one ONNX Loop (not unrolled); ONNX Runtime equals torch to 1e-5."""
    import onnxruntime as ort

    from sair_export.onnx import export_graph, export_modules, save_model

    model = make_model(use_semantic=False, fill="biharmonic", residual=True)
    fill = export_modules(model)["fill"]
    proto = export_graph(fill, "fill", model.cfg)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Loop") == 12 and len(ops) < 400 and "GridSample" not in ops
    save_model(proto, tmp_path / "f.onnx")
    sess = ort.InferenceSession(str(tmp_path / "f.onnx"), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(2)
    for h, w in ((1, 1), (77, 300), (128, 96)):
        image = torch.rand(1, 3, h, w, generator=g)
        mask = (torch.rand(1, 1, h, w, generator=g) > 0.6).float()
        mask[..., h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1
        with torch.no_grad():
            ref = fill(image, mask).numpy()
        got = sess.run(None, {"image": image.numpy(), "mask": mask.numpy()})[0]
        assert got.shape == ref.shape and np.abs(got - ref).max() <= 1e-5, (h, w)
