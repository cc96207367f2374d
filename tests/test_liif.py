"""LIIF's local ensemble: weights, grid reproduction and bilinear interpolation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sair_deploy.coords import make_coord
from sair_deploy.model.liif import ensemble, gather_latents, grid_neighbours, local_neighbours, pixel_centres, unfold3x3


def _identity_field(feat, coord):
    nb = local_neighbours(coord, feat.shape[-2:])
    return ensemble(gather_latents(feat, nb.row, nb.col), nb.weight), nb


def test_weights_sum_to_one_and_are_non_negative():
    coord = torch.rand(2, 500, 2) * 2 - 1
    nb = local_neighbours(coord, (7, 11))
    assert torch.allclose(nb.weight.sum(-1), torch.ones(2, 500), atol=1e-6)
    assert (nb.weight >= 0).all()
    assert nb.row.min() >= 0 and nb.row.max() <= 6 and nb.col.min() >= 0 and nb.col.max() <= 10


@pytest.mark.parametrize("grid", [(5, 7), (1, 3), (40, 33)])
def test_grid_neighbours_are_local_neighbours_of_the_grid(grid):
    """The separable form a tile's semantic term uses: the same indices, relative coordinates and
    weights as local_neighbours at every centre of a window of an image, borders included."""
    height, width = 150, 97
    ys = pixel_centres(torch.tensor(float(height)), 30, 57)
    xs = pixel_centres(torch.tensor(float(width)), 0, 97)
    coord = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(1, -1, 2)
    ref = local_neighbours(coord, grid)
    g = grid_neighbours(ys, xs, grid)
    for k, (iy, ix) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        assert torch.equal(ref.row[0, :, k].view(57, 97), g.rows[iy][:, None].expand(57, 97))
        assert torch.equal(ref.col[0, :, k].view(57, 97), g.cols[ix][None, :].expand(57, 97))
        assert torch.equal(ref.rel_coord[0, :, k, 0].view(57, 97), g.rel_rows[iy][:, None].expand(57, 97))
        assert torch.equal(ref.rel_coord[0, :, k, 1].view(57, 97), g.rel_cols[ix][None, :].expand(57, 97))
    assert torch.allclose(ref.weight[0].T, g.weight, atol=1e-7, rtol=0)


def test_queries_at_pixel_centres_reproduce_the_grid():
    feat = torch.randn(2, 5, 6, 9)
    coord = torch.from_numpy(make_coord((6, 9)))[None].expand(2, -1, -1)
    out, _ = _identity_field(feat, coord)
    assert torch.allclose(out, feat.flatten(2).transpose(1, 2), atol=1e-6)


def test_queries_between_centres_interpolate_bilinearly():
    h, w = 6, 9
    feat = torch.randn(1, 4, h, w)
    # anywhere in the image, borders included (border replication past the outer centres)
    coord = torch.rand(1, 300, 2) * 2 - 1
    coord[0, :4] = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [-1.0, 0.3], [0.99, -0.999]])
    out, _ = _identity_field(feat, coord)
    grid = coord.flip(-1).view(1, 300, 1, 2)  # grid_sample wants (x, y)
    expected = F.grid_sample(feat, grid, mode="bilinear", align_corners=False,
                             padding_mode="border")[..., 0].transpose(1, 2)
    assert torch.allclose(out, expected, atol=1e-5)


def test_rel_coord_is_scaled_like_liif():
    coord = torch.tensor([[[0.0, 0.0]]])  # exactly between 4 centres of a 4x4 grid
    nb = local_neighbours(coord, (4, 4))
    # LIIF multiplies (x - x_q) by the grid size: half a cell away reads as 1
    assert torch.allclose(nb.rel_coord.abs(), torch.ones(1, 1, 4, 2))
    assert torch.allclose(nb.weight, torch.full((1, 1, 4), 0.25))


def test_unfold_is_the_3x3_neighbourhood():
    feat = torch.arange(16.0).view(1, 1, 4, 4)
    u = unfold3x3(feat)
    assert u.shape == (1, 9, 4, 4)
    assert torch.equal(u[0, :, 1, 1], torch.tensor([0.0, 1, 2, 4, 5, 6, 8, 9, 10]))
    assert u[0, 0, 0, 0] == 0  # zero padding outside


# ---- the resampled base (bicubic, Lanczos-3) ---------------------------------------------------
from sair_deploy.model.liif import filter_neighbours, sample_base  # noqa: E402


@pytest.mark.parametrize("kind,pillow", [("bicubic", "BICUBIC"), ("lanczos", "LANCZOS")])
def test_filtered_base_equals_pillow_upsampling(kind, pillow):
    """Pillow's filters (Keys a = -0.5; Lanczos-3), every phase of non-integer factors; inside the
    image (at the border Pillow renormalises over the pixels it has, we replicate the edge)."""
    from PIL import Image

    h, w, oh, ow = 9, 12, 23, 29
    plane = np.random.default_rng(0).random((h, w)).astype(np.float32)
    big = np.asarray(Image.fromarray(plane, mode="F").resize((ow, oh), getattr(Image.Resampling, pillow)))
    coord = torch.from_numpy(make_coord((oh, ow)))[None]
    row, col, weight = filter_neighbours(coord, (h, w), kind)
    assert torch.allclose(weight.sum(-1), torch.ones_like(weight[..., 0]), atol=1e-6)
    assert row.min() == 0 and row.max() == h - 1 and col.min() == 0 and col.max() == w - 1
    ours = sample_base(torch.from_numpy(plane)[None, None], coord, kind)[0, :, 0].view(oh, ow).numpy()
    inner = (slice(8, oh - 8), slice(8, ow - 8))
    assert np.abs(ours[inner] - big[inner]).max() < 1e-5


def test_base_is_the_pixel_at_pixel_centres():
    base = torch.rand(1, 3, 9, 13)
    coord = torch.from_numpy(make_coord((9, 13)))[None]
    for kind in ("bilinear", "bicubic", "lanczos"):
        out = sample_base(base, coord, kind)
        assert torch.allclose(out, base.flatten(2).transpose(1, 2), atol=1e-6), kind


def test_sample_base_reads_a_block_of_a_larger_image():
    base = torch.rand(1, 3, 20, 24)
    r0, c0, bh, bw = 5, 7, 11, 12
    rows = r0 + 3 + torch.rand(50) * (bh - 6)  # 3 pixels of margin: every Lanczos tap is inside
    cols = c0 + 3 + torch.rand(50) * (bw - 6)
    coord = torch.stack([-1 + 2 * rows / 20, -1 + 2 * cols / 24], -1)[None]
    block = base[..., r0:r0 + bh, c0:c0 + bw]
    for kind in ("bilinear", "bicubic", "lanczos"):
        got = sample_base(block, coord, kind, torch.tensor([r0, c0]), torch.tensor([20.0, 24.0]))
        assert torch.allclose(got, sample_base(base, coord, kind), atol=1e-6)


@pytest.mark.parametrize("kind", ["bilinear", "bicubic", "lanczos"])
def test_base_read_from_a_blocks_rows_equals_the_base_planes(kind):
    """Exported query graphs read a residual's base colours from the end of each row of the
    block (``rows_gather``), never slicing the block: the colours of the planes, scattered
    queries and grids, in a block of a larger image."""
    from sair_deploy.model.liif import rows_gather, sample_base_grid

    g = torch.Generator().manual_seed(3)
    hidden, r0, c0, bh, bw = 5, 4, 6, 13, 15
    rows = torch.rand(1, bh, bw, hidden + 3, generator=g)  # features, then the base colours
    planes = rows[..., hidden:].permute(0, 3, 1, 2)
    read = rows_gather(rows, hidden, 3)
    size, origin = torch.tensor([22.0, 25.0]), torch.tensor([r0, c0])
    r = r0 + 3 + torch.rand(40, generator=g) * (bh - 6)  # every tap inside the block
    c = c0 + 3 + torch.rand(40, generator=g) * (bw - 6)
    coord = torch.stack([-1 + 2 * r / 22, -1 + 2 * c / 25], -1)[None]
    assert torch.allclose(sample_base(read, coord, kind, origin, size),
                          sample_base(planes, coord, kind, origin, size), atol=1e-6)
    ys = -1 + (2 * torch.arange(r0 + 3, r0 + bh - 3) + 1) / 22  # the block's inner pixel centres,
    xs = -1 + (2 * (torch.arange(2 * (c0 + 3), 2 * (c0 + bw - 3)) / 2) + 1) / 25  # half-steps across
    got = sample_base_grid(read, ys, xs, kind, origin, size)
    assert got.shape == (1, len(ys) * len(xs), 3)
    assert torch.allclose(got, sample_base_grid(planes, ys, xs, kind, origin, size), atol=1e-6)
