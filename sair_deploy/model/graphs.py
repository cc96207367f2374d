"""One small module per deployed graph, each with a fixed, flat signature (batch of 1).

The torch backend runs these modules; the exporter traces exactly these modules to ONNX. Every
graph's inputs are either what the host uploads once per image (the 8-bit image, the hole
indices, the semantic encoder's 8-bit input) or what another graph produced, plus a few integers
that say *what* to compute (a tile's windows, an output rectangle, a span of holes). Coordinates
are made inside the graphs from those integers, so no coordinate array ever crosses to the device.

The host uploads the 8-bit image once (for a model without the semantic branch only the region
around the holes) and the region's hole indices once. Per image:
``prepare`` (and ``fill`` for a fill model, ``semantic`` for a semantic one); per
tile: ``tile`` (AppEncoder + AIR's precompute on the tile); per call: ``query`` (a rectangle of
output pixels) or ``query_holes`` (a span of the hole pixels, scale 1); once at the end:
``composite`` (scale 1: the holes written into the 8-bit image) or ``assemble`` (scale > 1: the
tiles' answers laid out as the 8-bit output image).

Integer vectors (int64):

* ``region`` (prepare, semantic, composite): ``[r0, rh, c0, rw, gh, gw]``: the window of the
  uploaded image the hole list and the tiles refer to (start, size) and the semantic encoder's input size
  in patches (:func:`sair_deploy.preprocess.semantic_size` over the patch size; prepare and
  composite ignore it).
* ``box`` (tile): ``[ir0, ih/4, ic0, iw/4, kr0, kh, kc0, kw, rh, rw, H, W, off_r, off_c]``: the
  encoder's window (start, size in units of 4) and the kept window (start, size) in region
  pixels, the region's true size, the full image's size and where the region starts in it.
* ``rect`` (query): ``[oy0, oy1, ox0, ox1, OH, OW, H, W, pr0, pc0]``: output rows/cols answered,
  the output and input sizes, and where ``air_pre``'s first pixel lies in the input image.
* ``span`` (query_holes): ``[s, e, rw, H, W, off_r, off_c, pr0, pc0]``: holes ``s..e-1`` of the
  region-flat ``holes`` list, the region's width, the image size, the region's offset and
  ``air_pre``'s origin.
* ``out_size`` (assemble): ``[OH, OW]``; ``row_edges``/``col_edges`` (not plan vectors: inputs
  of any length): the output rows/cols where the tiles' answers start (and the end).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .bands import banded_rows
from .fast import FastSAIR, _rows_here, exported_bands
from .liif import grid_size, on_device, pixel_centres
from .sair import SAIR


# Inputs that are plan vectors (a few integers the host hands every call; TensorRT reads them on
# the host as shape tensors). Every other input is a device array.
PLAN_INPUTS = frozenset({"region", "box", "rect", "span", "out_size"})


def _ints(v: Tensor, n: int) -> list:
    """The first ``n`` entries of an int64 vector as Python ints (symbolic while exporting)."""
    vals = [v[i].item() for i in range(n)]
    for x in vals:
        torch._check(x >= 0)
    return vals


def _plan_floats(v: Tensor, like: Tensor) -> Tensor:
    """Plan numbers ``v`` (a host int64 vector) as float32 on ``like``'s device, without making the
    host wait (:func:`~sair_deploy.model.liif.on_device`)."""
    return on_device(v, like).to(torch.float32)


def to_unit(image_u8: Tensor) -> Tensor:
    """8-bit values -> float32 in [0, 1]."""
    return image_u8.to(torch.float32) / 255.0


def to_u8(rgb: Tensor) -> Tensor:
    """Float in [0, 1] (clipped here) -> 8 bits, rounded to nearest."""
    return torch.round(rgb.clamp(0.0, 1.0) * 255.0).to(torch.uint8)


def _window(image: Tensor, region: Tensor) -> Tensor:
    """The ``region`` window ``(1, rh, rw, C)`` of an ``image (1, H, W, C)`` (float: TensorRT
    takes 8-bit tensors only as a network's inputs and outputs)."""
    r0, rh, c0, rw = _ints(region, 4)
    torch._check(rh >= 1)
    torch._check(rw >= 1)
    rows = torch.arange(rh, device=image.device) + r0
    cols = torch.arange(rw, device=image.device) + c0
    return image.index_select(1, rows).index_select(2, cols)


def _unflatten(idx: Tensor, rw, r0, c0) -> tuple[Tensor, Tensor]:
    """Region-flat pixel indices ``idx`` (int64, >= 0) of a region ``rw`` wide starting at row
    ``r0``, column ``c0`` of the image: the image rows and columns."""
    r = torch.div(idx, rw, rounding_mode="trunc")  # indices are >= 0: no floor fix-ups
    return r + r0, idx - r * rw + c0


def _image_flat(holes: Tensor, region: Tensor, height, width) -> Tensor:
    """Region-flat hole indices (the sentinel last) as indices of the whole ``height x width``
    image, the sentinel as ``height * width``."""
    idx = holes.long()
    rows, cols = _unflatten(idx, region[3], region[0], region[2])
    return torch.where(idx < region[1] * region[3], rows * width + cols, torch.full_like(idx, height * width))


class PrepareGraph(nn.Module):
    """``image (1,H,W,3) uint8`` (the uploaded image), ``holes (N+1,) int32`` (region-flat hole
    indices, then one sentinel ``rh*rw``), ``region`` -> the region's ``image (1,3,hp,wp)`` in
    [0,1] and ``mask (1,1,hp,wp)`` (1 = hole), both padded symmetrically at the bottom and right
    to multiples of 4 (the AppEncoder's stride)."""

    def forward(self, image: Tensor, holes: Tensor, region: Tensor) -> tuple[Tensor, Tensor]:
        x = _window(to_unit(image), region)
        _, h, w, _ = x.shape
        flat = torch.zeros(h * w + 1, dtype=torch.float32, device=image.device)
        flat = flat.index_put((holes.long(),), torch.ones_like(holes, dtype=torch.float32))
        mask = flat[: h * w].reshape(1, 1, h, w)
        x = x.permute(0, 3, 1, 2)
        rows = _symmetric(h, (-h) % 4, image.device)
        cols = _symmetric(w, (-w) % 4, image.device)
        x = x.index_select(2, rows).index_select(3, cols)
        mask = mask.index_select(2, rows).index_select(3, cols)
        return x, mask


def _symmetric(n, pad, device) -> Tensor:
    """Indices ``0..n+pad-1`` of an axis padded symmetrically at its end (numpy's "symmetric")."""
    i = torch.arange(n + pad, device=device)
    back = 2 * n - 1 - i
    back = torch.where(back > 0, back, torch.zeros_like(back))  # a 1-pixel side repeats itself
    return torch.where(i < n, i, back)


def resize_weights(n_in, n_out, like: Tensor) -> Tensor:
    """``(n_out, n_in)``: Pillow's ``BILINEAR`` resize of an axis as a matrix (a triangle filter
    stretched by the reduction factor, so a reduction averages every pixel it covers; rows
    normalised to sum to 1). Dense: the encoder's input is a few hundred pixels a side."""
    sizes = grid_size((n_in, n_out), like)
    scale = sizes[0] / sizes[1]
    support = torch.clamp(scale, min=1.0)
    centre = (torch.arange(n_out, device=like.device).to(torch.float32) + 0.5) * scale
    x = torch.arange(n_in, device=like.device).to(torch.float32) + 0.5
    w = torch.relu(1.0 - (x[None, :] - centre[:, None]).abs() / support)
    return w / w.sum(dim=1, keepdim=True)


def semantic_pixels(image: Tensor, holes: Tensor, region: Tensor, patch: int) -> tuple[Tensor, Tensor]:
    """The in-graph twin of :func:`sair_deploy.preprocess.semantic_input` (which training uses):
    the whole 8-bit ``image (1,H,W,3)`` with its holes black and its known fraction, resized to
    ``region[4:6]`` patches of ``patch`` pixels as Pillow resizes them and rounded to 8 bits as the
    host did, in [0, 1]: ``sem_image (1,3,sh,sw)``, ``sem_valid (1,1,sh,sw)``."""
    _, h, w, _ = image.shape
    gh, gw = _ints(region[4:6], 2)
    torch._check(gh >= 1)
    torch._check(gw >= 1)
    sh, sw = patch * gh, patch * gw
    flat = torch.ones(h * w + 1, dtype=torch.float32, device=image.device)
    idx = _image_flat(holes, region, h, w)
    valid = flat.index_put((idx,), torch.zeros_like(idx, dtype=torch.float32))[: h * w].reshape(1, h, w, 1)
    planes = torch.cat([to_unit(image) * valid, valid], dim=3).permute(0, 3, 1, 2)  # (1, 4, H, W)
    # columns, then rows, as Pillow does (its intermediate image is float32 too)
    small = resize_weights(h, sh, planes) @ (planes @ resize_weights(w, sw, planes).t())
    small = torch.round(small.clamp(0.0, 1.0) * 255.0) / 255.0
    return small[:, :3], small[:, 3:]


class SemanticGraph(nn.Module):
    """``image (1,H,W,3) uint8`` (the whole image), ``holes``, ``region`` (see :class:`PrepareGraph`) ->
    ``sem_pre (1,hidden_sir,gh,gw)``: the encoder's input made in the graph
    (:func:`semantic_pixels`), the semantic encoder, SIR's precomputed first layer."""

    def __init__(self, model: SAIR):
        super().__init__()
        self.fast = FastSAIR(model)

    def forward(self, image: Tensor, holes: Tensor, region: Tensor) -> Tensor:
        patch = self.fast.cfg.semantic.patch_size
        emb, holes = self.fast.model.encode_semantic(*semantic_pixels(image, holes, region, patch))
        return self.fast.semantic_precompute(emb, holes)


class FillGraph(nn.Module):
    """``image (1,3,h,w)``, ``mask (1,1,h,w)`` -> the image with holes filled (``cfg.fill``).

    Runs once on the region (the fill is global), before the tiled AppEncoder."""

    def __init__(self, model: SAIR):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        return self.model.fill_holes(image, mask)


class TileGraph(nn.Module):
    """One tile: the AppEncoder on window ``box[0:4]`` of the (filled) region image, then AIR's
    precomputed first layer on the kept window ``box[4:8]`` -> ``air_pre (1,kh,kw,hidden(+3))``,
    laid out as rows (channels last): the query graphs read each neighbour's features as one
    contiguous row. In torch it is a view of the rows path's channels-last precompute; an exported
    graph transposes once per tile, and with a semantic term its ``kh`` is rounded up to whole
    bands of :data:`~sair_deploy.model.bands.EXPORT_BAND_ROWS` rows (extra rows nobody reads: the
    query graphs index rows by the block's width and origin only).

    The kept window lies inside the encoder's window by at least the encoder's receptive radius
    wherever it does not touch the region's border, so its features equal a whole-image pass.
    """

    def __init__(self, model: SAIR):
        super().__init__()
        self.fast = FastSAIR(model)

    def forward(self, image: Tensor, mask: Tensor, sem_pre: Tensor | None, box: Tensor) -> Tensor:
        ir0, qh, ic0, qw, kr0, kh, kc0, kw, rh, rw = _ints(box, 10)
        for v in (qh, qw, kh, kw):
            torch._check(v >= 1)
        # index_select with sizes that are plan integers themselves keeps every shape exact while
        # exporting (slices would clamp); the encoder's window is 4*qh x 4*qw (its stride)
        rows = torch.arange(4 * qh, device=image.device) + ir0
        cols = torch.arange(4 * qw, device=image.device) + ic0
        x = image.index_select(2, rows).index_select(3, cols)
        m = mask.index_select(2, rows).index_select(3, cols)
        if _rows_here(x):  # NHWC convolutions: 1.5-1.8x faster in oneDNN here, tensor cores in cuDNN
            x, m = x.contiguous(memory_format=torch.channels_last), m.contiguous(memory_format=torch.channels_last)
        app = self.fast.model.encode_appearance(x, m)
        if self.fast.cfg.residual:  # the base colours ride along as 3 extra channels
            app = torch.cat([app, x], dim=1)
        # LIIF unfolds with zeros beyond the image: the kept window plus a 1-pixel border, with
        # whatever lies past the region's true size (the stride padding, the outside) zeroed
        banded = exported_bands(sem_pre is not None)
        out_rows = banded_rows(kh) if banded else kh
        r = torch.arange(out_rows + 2, device=app.device) + (kr0 - 1)  # region rows of the window
        c = torch.arange(kw + 2, device=app.device) + (kc0 - 1)
        window_rows = r - (ir0 - 1)
        if banded:
            # an exported semantic term runs over whole bands of rows: the window's rows are
            # rounded up to them here, where rows are gathered anyway, clamped to the padded
            # encoder window (nothing reads them; Min, not Clip: TensorRT clips floats only)
            window_rows = torch.minimum(window_rows, 4 * box[1:2] + 1)
        app = F.pad(app, (1, 1, 1, 1)).index_select(2, window_rows).index_select(3, c - (ic0 - 1))
        inside = ((r >= 0) & (r < rh))[:, None] & ((c >= 0) & (c < rw))[None, :]
        app = app * inside.to(app.dtype)
        semantic = None
        if sem_pre is not None:
            size = _plan_floats(box[10:12], app)  # S is read at the image's pixel centres
            ys = pixel_centres(size[0], box[12] + kr0, kh)
            xs = pixel_centres(size[1], box[13] + kc0, kw)
            semantic = (sem_pre, ys, xs, (2.0 / size).reshape(1, 1, 2))
        return self.fast.appearance_precompute(app, semantic, rows_out=True)


class TileGraphNoSemantic(TileGraph):
    """:class:`TileGraph` for the LIIF ablation: ``image, mask, box`` -> ``air_pre``."""

    def forward(self, image: Tensor, mask: Tensor, box: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(image, mask, None, box)


def output_grid(rect: Tensor, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """What a ``rect`` plan vector asks for, on ``like``'s device: the block's ``grid = [H, W,
    row0, col0]``, the centres ``ys``, ``xs`` of the output rows and columns it answers, and the
    output pixel's ``cell``."""
    oy0, oy1, ox0, ox1 = _ints(rect, 4)
    torch._check(oy1 > oy0)
    torch._check(ox1 > ox0)
    out_size = _plan_floats(rect[4:6], like)
    ys = pixel_centres(out_size[0], rect[0], oy1 - oy0)
    xs = pixel_centres(out_size[1], rect[2], ox1 - ox0)
    return _plan_floats(rect[6:10], like), ys, xs, (2.0 / out_size).reshape(1, 1, 2)


class QueryGraph(nn.Module):
    """RGB, clipped to [0, 1], of output rows ``rect[0]..rect[1]-1`` x cols ``rect[2]..rect[3]-1``
    of an ``OH x OW`` rendering, from a tile's ``air_pre (1,h,w,C)`` (rows) -> ``rgb (1,
    rows*cols, 3)`` (row-major)."""

    def __init__(self, model: SAIR):
        super().__init__()
        self.fast = FastSAIR(model)

    def forward(self, air_pre: Tensor, rect: Tensor) -> Tensor:
        pre = air_pre.permute(0, 3, 1, 2)  # FastSAIR's (B, C, h, w), channels last in memory
        return self.fast.query_grid(pre, *output_grid(rect, pre)).clamp(0.0, 1.0)


class QueryHolesGraph(nn.Module):
    """RGB, clipped to [0, 1], at holes ``span[0]..span[1]-1`` of the region-flat ``holes`` list
    (scale 1: the output grid is the input grid), from a tile's ``air_pre (1,h,w,C)`` (rows)
    -> ``rgb (1, n, 3)``."""

    def __init__(self, model: SAIR):
        super().__init__()
        self.fast = FastSAIR(model)

    def forward(self, air_pre: Tensor, holes: Tensor, span: Tensor) -> Tensor:
        s, e = _ints(span, 2)
        torch._check(e > s)
        torch._check(e <= holes.shape[0])
        air_pre = air_pre.permute(0, 3, 1, 2)  # FastSAIR's (B, C, h, w), channels last in memory
        size = _plan_floats(span[3:5], air_pre)
        rows, cols = (v.to(torch.float32) for v in _unflatten(holes[s:e].long(), span[2], span[5], span[6]))
        coord = torch.stack([-1.0 + (2.0 * rows + 1.0) / size[0],
                             -1.0 + (2.0 * cols + 1.0) / size[1]], dim=-1).unsqueeze(0)
        grid = torch.cat([size, _plan_floats(span[7:9], air_pre)])
        cell = (2.0 / size).reshape(1, 1, 2)
        return self.fast.query(air_pre, grid, coord, cell).clamp(0.0, 1.0)


class CompositeGraph(nn.Module):
    """Scale 1: the region of the uploaded ``image (1,H,W,3) uint8`` with its holes replaced by
    ``rgb (N,3)`` at ``holes (N+1,)`` (region-flat, the sentinel last; ``region`` as
    :class:`PrepareGraph`) -> ``out (1,rh,rw,3) uint8``; known pixels untouched."""

    def forward(self, image: Tensor, holes: Tensor, rgb: Tensor, region: Tensor) -> Tensor:
        # in float until the output: TensorRT takes 8-bit tensors only as inputs and outputs
        patch = _window(image.to(torch.float32), region)  # the region only: the holes lie in it
        _, h, w, _ = patch.shape
        flat = torch.cat([patch.reshape(h * w, 3), rgb.new_zeros(1, 3)])
        values = torch.cat([torch.round(rgb.clamp(0.0, 1.0) * 255.0), rgb.new_zeros(1, 3)])
        flat = flat.index_put((holes.long(),), values)
        return flat[: h * w].reshape(1, h, w, 3).to(torch.uint8)


class AssembleGraph(nn.Module):
    """Scale > 1: the tiles' answers ``rgb (M,3)``, laid out tile after tile (tile rows top to
    bottom, tiles left to right, each tile's pixels row-major) -> ``out (1,OH,OW,3) uint8``.

    ``out_size = [OH, OW]``; ``row_edges (nr+1,)`` and ``col_edges (nc+1,)`` are the output
    rows/cols where tiles start (then the end); tile ``(i, j)`` starts at
    ``row_edges[i]*OW + height_i*col_edges[j]``.
    """

    def forward(self, rgb: Tensor, out_size: Tensor, row_edges: Tensor, col_edges: Tensor) -> Tensor:
        oh, ow = _ints(out_size, 2)
        torch._check(oh > 0)
        torch._check(ow > 0)
        row_edges, col_edges = row_edges.to(rgb.device), col_edges.to(rgb.device)
        ys = torch.arange(oh, device=rgb.device)
        xs = torch.arange(ow, device=rgb.device)
        i = (ys[:, None] >= row_edges[None, 1:-1]).sum(1)  # tile row of each output row
        j = (xs[:, None] >= col_edges[None, 1:-1]).sum(1)
        top, height = row_edges[i], row_edges[i + 1] - row_edges[i]
        left, width = col_edges[j], col_edges[j + 1] - col_edges[j]
        idx = (top * ow)[:, None] + height[:, None] * left[None, :] \
            + (ys - top)[:, None] * width[None, :] + (xs - left)[None, :]
        return to_u8(rgb[idx.reshape(-1)].reshape(1, oh, ow, 3))


def build_graphs(model: SAIR) -> dict[str, nn.Module]:
    """The graphs a model deploys as, by name, in eval mode."""
    model = model.eval()
    sem = model.cfg.use_semantic
    graphs: dict[str, nn.Module] = {
        "prepare": PrepareGraph(),
        "tile": TileGraph(model) if sem else TileGraphNoSemantic(model),
        "query": QueryGraph(model),
        "query_holes": QueryHolesGraph(model),
        "composite": CompositeGraph(),
        "assemble": AssembleGraph(),
    }
    if model.cfg.fill != "zero":
        graphs["fill"] = FillGraph(model)
    if sem:
        graphs["semantic"] = SemanticGraph(model)
    return {k: v.eval() for k, v in graphs.items()}
