"""The same function as :class:`SAIR`, split into per-image precompute and cheap per-query work.

Three exact rewrites (paper notation, ``W1 = [W_z | W_s | W_rel | W_cell]`` a first layer):

* The first layer of each MLP is linear in its inputs, so its feature part is computed once per
  latent cell or pixel: a 3x3 convolution over ``[E, holes]`` for SIR and over the appearance
  features ``Z`` for AIR (LIIF's 3x3 unfold followed by a linear map *is* a 3x3 convolution).
  Only ``W_rel @ rel_coord + W_cell @ cell`` is left per query.
* SIR's output layer and the semantic block of AIR's first layer meet with nothing non-linear in
  between; they fold into one matrix ``W_s @ W_out``. Since the area weights sum to 1, the
  weighted sum over SIR's neighbours can be taken before it.
* ``S(x_q)`` is read at input pixel centres, which do not depend on the output scale: the whole
  semantic term of AIR's first layer is a per-pixel map, computed once per image.

Data flows ``semantic_precompute -> appearance_precompute (+ the semantic term) -> query``; the runtime calls these on
blocks of the image (see :mod:`sair_deploy.inpainter`), training may call :meth:`query_sparse`.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .liif import (gather_channels, grid_neighbours, local_neighbours, rows_gather, sample_base, sample_base_grid,
                   scale_cell, unfold3x3)
from .bands import EXPORT_BAND_ROWS, add_semantic_bands, semantic_band
from .sair import SAIR, Features, pixel_cell


def _left(w: Tensor, x: Tensor) -> Tensor:
    """``w (M, K) @ x (B, K, N)`` as one batched product (``matmul`` would transpose ``x``)."""
    return torch.bmm(w.expand(x.shape[0], *w.shape), x)


def _no_autocast(t: Tensor):
    """Autocast off on ``t``'s device (the meta stand-in has no autocast to turn off)."""
    if t.device.type in ("cpu", "cuda"):
        return torch.autocast(t.device.type, enabled=False)
    return contextlib.nullcontext()


def _weights(lin: nn.Linear, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``lin``'s weight and bias in ``dtype``; a low-precision copy is cast once and kept until
    the weights change (not once per call, as autocast would)."""
    if lin.weight.dtype == dtype:
        return lin.weight, lin.bias
    if torch.is_grad_enabled() and lin.weight.requires_grad:  # training: a differentiable cast
        return lin.weight.to(dtype), lin.bias.to(dtype)
    key = (dtype, lin.weight._version, lin.weight.data_ptr())
    cached = getattr(lin, "_lowp_cache", None)
    if cached is None or cached[0] != key:
        cached = (key, lin.weight.detach().to(dtype), lin.bias.detach().to(dtype))
        lin._lowp_cache = cached
    return cached[1], cached[2]


def _find_linear_relu():
    """oneDNN's linear with a fused ReLU (what inductor emits on CPUs), if this torch has it."""
    try:
        return torch.ops.mkldnn._linear_pointwise if torch.backends.mkldnn.is_available() else None
    except (AttributeError, RuntimeError):
        return None


_LINEAR_RELU = _find_linear_relu()


GPU_ROWS = True  # the rows path on CUDA too (bench/gpu.py sets it False to time channels first)


def _rows_here(t: Tensor) -> bool:
    """Whether work on ``t`` runs on rows (channels last) with a fused linear + bias + ReLU:
    eagerly without gradients, on a CPU with oneDNN's fused products or on a CUDA GPU (cuBLASLt's
    bias + ReLU epilogue). Rows make every gathered feature one contiguous read (on a GPU,
    coalesced instead of one scattered 2-byte read per channel). The exported graphs (and
    training) stay channels first."""
    if torch.compiler.is_exporting() or torch.is_grad_enabled():
        return False
    if t.device.type == "cpu":
        return _LINEAR_RELU is not None
    return t.device.type == "cuda" and GPU_ROWS


def _gpu_rows(t: Tensor) -> bool:
    """The rows path's GPU arithmetic for ``t``: there the work is memory-bound, so it takes
    fewer passes over the activations (whole calls, the coordinate term as one in-place product,
    the RGB layer per neighbour) where a CPU wants cache-sized pieces and multiply-adds."""
    return t.device.type == "cuda"


def _piece(t: Tensor) -> int:
    """Queries (or centres) per piece of the rows path on ``t``'s device."""
    return GPU_QUERY_PIECE if _gpu_rows(t) else CPU_QUERY_PIECE


def _linear_relu(h: Tensor, lin: nn.Linear) -> Tensor:
    """``relu(h @ W.T + b)`` for a 2-D ``h``, in ``h``'s precision, with bias and ReLU inside the
    product on the rows path: cuBLASLt's epilogue on a GPU (no extra passes over the
    activations), a oneDNN post-op on a CPU (1.8x faster than linear then ReLU for 1024 x 256 x
    256 in bfloat16 here); elsewhere, and with gradients, the plain ops."""
    w, bias = _weights(lin, h.dtype)
    if _rows_here(h):
        if _gpu_rows(h):
            return torch._addmm_activation(bias, h, w.t())
        return _LINEAR_RELU(h, w, bias, "relu", [], "")
    return F.linear(h, w, bias).relu_()


def graph_layers(layers: list[tuple[Tensor, Tensor]]) -> tuple[list[tuple[Tensor, Tensor]], Tensor | None]:
    """Hidden layers ``layers`` (``(weight, bias)`` pairs) in the form :func:`hidden_graph` runs
    them: each layer's transposed weight and its floor ``-c_i``, where ``c_i = W_i c_{i-1} +
    b_i`` is the bias carried into it; and ``c`` of the last layer (None without layers), what
    :func:`hidden_graph` leaves out of the last activations. Constants: made once, outside any
    loop."""
    out, c = [], None
    for w, b in layers:
        c = b if c is None else w @ c + b
        out.append((w.t().contiguous(), -c))
    return out, c


def hidden_graph(h: Tensor, layers: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Hidden layers as the exported graphs run them, on rows ``h (N, C)`` already through the
    first layer's ReLU, ``layers`` from :func:`graph_layers`: ``relu(z + b)`` is written ``max(z,
    -b) + b`` and the ``+ b`` carried into the next layer's bias, so each layer is a product
    without a bias and a ``Max`` against a constant vector. Returns the last activations less the
    carried ``c`` (add it once after a weighted sum whose weights sum to 1, or fold it into the
    next product's bias): the same function up to rounding. Why: ONNX Runtime's CPU ``Gemm`` with
    a bias ran 1.15x slower than its bare product (4096 x 256 x 256, one process, calls
    alternating on one thread pool); the product and the ``Max`` ran 1.09x faster than the
    fused ``Gemm`` and ``ReLU``."""
    for w_t, floor in layers:
        h = torch.maximum(h @ w_t, floor)
    return h


def _hidden_rows(h: Tensor, layers: list[nn.Linear]) -> Tensor:
    """An MLP's hidden layers on rows: ``h (N, C)``, the first layer's pre-activation, through its
    ReLU and each hidden layer with bias and ReLU fused: ``(N, H)``."""
    h = h.relu_()
    for lin in layers:
        h = _linear_relu(h, lin)
    return h


def _ensemble_cf(pre: Tensor, row: Tensor, col: Tensor, rel: Tensor, weight: Tensor, w_rel: Tensor,
                 cell_term: Tensor, layers: list[nn.Linear], channels: int | None = None) -> Tensor:
    """:func:`_mlp_cf` on ``pre (B, C, h, w)``, the first layer's precomputed part (its leading
    ``channels``), read at each query's 4 neighbours ``row, col (B, 4, Q)``: ``(B, H, Q)``.

    Eagerly on a CPU the queries go through in pieces of :data:`CPU_QUERY_PIECE`, so each
    layer's activations stay in cache while the call's coordinate work is done once (exported
    graphs take the call at once).
    """
    q = row.shape[-1]
    if not torch.compiler.is_exporting() and pre.device.type == "cpu" and q > CPU_QUERY_PIECE:
        return torch.cat([_ensemble_cf(pre, row[..., i:i + CPU_QUERY_PIECE], col[..., i:i + CPU_QUERY_PIECE],
                                       rel[:, :, i:i + CPU_QUERY_PIECE], weight[..., i:i + CPU_QUERY_PIECE],
                                       w_rel, cell_term, layers, channels)
                          for i in range(0, q, CPU_QUERY_PIECE)], dim=-1)
    return _mlp_cf(gather_channels(pre, row, col, channels), rel, weight, w_rel, cell_term, layers)


def _is_rows(pre: Tensor) -> bool:
    """A block precompute laid out channels last (see :func:`_rows_here`)."""
    return (_rows_here(pre) and pre.dim() == 4 and pre.is_contiguous(memory_format=torch.channels_last)
            and not pre.is_contiguous())


def _ensemble_rows(pre: Tensor, row: Tensor, col: Tensor, rel: Tensor, weight: Tensor, w_rel: Tensor,
                   cell_term: Tensor, layers: list[nn.Linear], channels: int | None = None,
                   out_layer: nn.Linear | None = None) -> Tensor:
    """:func:`_ensemble_cf` for a channels-last ``pre``: each neighbour's features are contiguous
    rows, gathered as such, and the MLP runs on rows with bias and ReLU fused, one neighbour at a
    time, in pieces of :func:`_piece` queries. ``(B, H, Q)`` (a transposed view).

    With ``out_layer`` each neighbour's activations go through that (linear) layer, without its
    bias, before the weighted sum: the same sum, since the weights sum to 1, but 3 channels to
    accumulate instead of ``H``. Returns ``(B, Q, 3)`` then; add the bias."""
    b, c_all, height, width = pre.shape
    table = pre.permute(0, 2, 3, 1).reshape(b, height * width, c_all)  # a view
    if channels is not None:
        table = table[..., :channels]
    idx = row * width + col  # (B, 4, Q)
    dt = pre.dtype
    gpu = _gpu_rows(pre)
    b_idx = torch.arange(b, device=idx.device)[:, None]
    q = idx.shape[-1]
    width_out = (out_layer.out_features if out_layer is not None
                 else layers[-1].out_features if layers else w_rel.shape[0])
    ens = torch.empty(b, q, width_out, device=pre.device)
    with _no_autocast(pre):
        # casts once per call, not per piece and neighbour
        rel, weight, cell_term = rel.to(dt), weight.float(), cell_term.to(dt)
        w_rel_t = w_rel.to(dt).t().expand(b, 2, w_rel.shape[0])
        if cell_term.shape[1] == 1:  # one cell per call
            if gpu:
                # add it to the table once (a contiguous copy of the hidden channels, far
                # smaller than 4 rows per query) instead of to every gathered row
                table = table + cell_term
            else:
                # a third coordinate, always 1, whose weights are the cell term: the same product
                # adds it, without another pass over the gathered rows (the table is a whole
                # tile's precompute here, too big to copy per call)
                rel = torch.cat([rel, torch.ones_like(rel[..., :1])], dim=-1)
                w_rel_t = torch.cat([w_rel_t, cell_term.expand(b, 1, w_rel.shape[0])], dim=1)
            cell_term = None
        w_out = _weights(out_layer, dt)[0].t() if out_layer is not None else None
        per_query_cell = cell_term is not None and cell_term.shape[1] > 1
        piece = _piece(pre)
        for i in range(0, q, piece):
            sl = slice(i, i + piece)
            cell_i = cell_term[:, sl] if per_query_cell else cell_term
            out = ens[:, sl]  # the ensemble is written in place: no concatenation of pieces
            for k in range(idx.shape[1]):
                first = (table[0].index_select(0, idx[0, k, sl]).unsqueeze(0) if b == 1
                         else table[b_idx, idx[:, k, sl]])  # (B, n, C)
                # the coordinate part of the first layer: one pass, in place (two broadcast
                # multiply-adds instead were 2-8x slower on a CPU, where w_rel's columns are strided)
                h = first.baddbmm_(rel[:, k, sl], w_rel_t)
                if cell_i is not None:
                    h = h.add_(cell_i)
                n = h.shape[1]
                h = _hidden_rows(h.reshape(b * n, -1), layers)
                if w_out is not None:
                    h = h @ w_out
                # accumulate in float32 from float32: a bfloat16 operand in a float32 multiply-add
                # takes torch's slow mixed-dtype loop (3x the cast then the multiply-add)
                h = h.float().view(b, n, -1)
                wk = weight[:, k, sl].unsqueeze(-1)
                if k == 0:
                    torch.mul(h, wk, out=out)
                else:
                    out.addcmul_(h, wk)
    return ens if out_layer is not None else ens.transpose(1, 2)


def _ensemble_rows_graph(table: Tensor, row: Tensor, col: Tensor, rel: Tensor, weight: Tensor, w_rel: Tensor,
                         cell_term: Tensor, layers: list[nn.Linear], out_layer: nn.Linear) -> Tensor:
    """The local ensemble as the exported query graphs compute it, on a block laid out as rows,
    ``table (1, h, w, C)`` (the tile graph's output), read at each query's 4 neighbours ``row,
    col (1, 4, Q)``: ``(1, Q, 3)``, the RGB layer's bias included.

    One neighbour at a time: a ``Gather`` of whole rows, the coordinate part, the hidden layers
    (:func:`hidden_graph`: products without a bias, weights packed once) and the RGB layer,
    weighted and summed (linear, so the same sum as ensembling the activations first; the hidden
    layers' carried bias is added once, with the RGB layer's). Every activation is ``Q x H``, a quarter of all four
    neighbours at once, and nothing is transposed. Trailing channels of the table (a residual's
    base colours) go through the first layer's elementwise part with zero weights and meet zero
    columns of the next product, so the table is never sliced: ONNX Runtime would copy a sliced
    input, the whole block, in every call."""
    _, h, w, c_all = table.shape
    flat = table.reshape(h * w, c_all)
    extra = c_all - w_rel.shape[0]
    w_next = (layers[0] if layers else out_layer).weight
    if extra:  # zero weights for the trailing channels
        w_rel = F.pad(w_rel, (0, 0, 0, extra))
        cell_term = F.pad(cell_term, (0, extra))
        w_next = F.pad(w_next, (0, extra))
    # the call's one cell (``cell_term (1, 1, C)``) rides as a third coordinate, always 1: the
    # first layer is then one product with the gathered rows as its addend, which ONNX Runtime
    # runs with the ReLU as one FusedGemm
    w_rel_t = torch.cat([w_rel.t(), cell_term[0]])
    coords = torch.cat([rel[0], torch.ones_like(rel[0, ..., :1])], dim=-1)  # (4, Q, 3)
    idx = row[0] * w + col[0]  # (4, Q)
    hidden, carried = graph_layers([(w_next if i == 0 else lin.weight, lin.bias) for i, lin in enumerate(layers)])
    w_out = out_layer.weight if layers else w_next
    out = None
    for k in range(idx.shape[0]):
        x = torch.addmm(flat.index_select(0, idx[k]), coords[k], w_rel_t).relu()
        rgb = F.linear(hidden_graph(x, hidden), w_out) * weight[0, k].unsqueeze(-1)
        out = rgb if out is None else out + rgb
    bias = out_layer.bias if carried is None else out_layer.bias + w_out @ carried
    return (out + bias).unsqueeze(0)


def _mlp_cf(first: Tensor, rel: Tensor, weight: Tensor, w_rel: Tensor, cell_term: Tensor,
            layers: list[nn.Linear]) -> Tensor:
    """The local ensemble of an MLP's hidden layers, channels first: many queries at once.

    ``first (B, H, 4, Q)``: the first layer's feature part at each query's 4 neighbours
    (neighbour-major); ``rel (B, 4, Q, 2)``, ``weight (B, 4, Q)``; ``cell_term (B|1, Q|1, H)``.
    Finishes the first layer (``+ W_rel rel + W_cell cell``), runs the hidden layers and returns
    the area-weighted sum of the last hidden activations, ``(B, H, Q)``, in float32. Channels
    first, every product reads the gathered features where they lie (no transposes of
    ``4 Q x H`` blocks), bias and ReLU run in place, and the ensemble is four multiply-adds over
    contiguous slices.

    A bfloat16 ``first`` (the torch backend's ``bf16``) runs the layers in bfloat16, outside
    autocast: weights cast once, no casts between layers, the coordinate part in the same
    product as the features it is added to; the ensemble (its weights are coordinate math)
    accumulates in float32.
    """
    b, hid, n, q = first.shape
    dt = first.dtype
    with _no_autocast(first):
        rel_t = rel.reshape(b, n * q, 2).transpose(1, 2).to(dt)
        h = torch.baddbmm(first.reshape(b, hid, n * q), w_rel.to(dt).expand(b, *w_rel.shape), rel_t)
        # the cell term (B|1, Q|1, H): one per query in training, one per call in the runtime
        h = h.view(b, hid, n, q).add_(cell_term.to(dt).transpose(1, 2).unsqueeze(2)).relu_()
        h = h.view(b, hid, n * q)
        for lin in layers:
            w, bias = _weights(lin, dt)
            h = _left(w, h).add_(bias.unsqueeze(-1)).relu_()
        h = h.view(b, -1, n, q)
        wt = weight.float().unsqueeze(1)  # (B, 1, 4, Q): in float32, so the weights sum to 1
        out = h[:, :, 0].float() * wt[:, :, 0]
        for k in range(1, n):
            out = out.addcmul_(h[:, :, k], wt[:, :, k])
    return out


CPU_PIECE = 4096  # centres per piece of the semantic term on a CPU (its activations stay in cache)
CPU_QUERY_PIECE = 8192  # queries per piece of an MLP's hidden layers on a CPU (backends.base.CPU_QUERY_CHUNK)
GPU_QUERY_PIECE = 1 << 18  # on a GPU pieces only bound the activations' memory (128 MiB a layer)


def exported_bands(semantic: bool) -> bool:
    """Whether a tile's precompute adds its semantic term over whole bands of rows: in an exported
    tile graph with a semantic term, which rounds its rows up to them (:meth:`FastSAIR._add_semantic_bands`)."""
    return semantic and torch.compiler.is_exporting()


def _neighbour_major(nb) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``nb``'s rows, columns, relative coordinates and weights with the 4 neighbours before the
    queries: ``(B, 4, Q)`` (``rel``: ``(B, 4, Q, 2)``), the layout :func:`_ensemble_cf` takes."""
    return (nb.row.transpose(1, 2), nb.col.transpose(1, 2), nb.rel_coord.transpose(1, 2),
            nb.weight.transpose(1, 2))


def _folded(h: Tensor, fold: tuple[Tensor, Tensor]) -> Tensor:
    """SIR's ensembled hidden activations ``h (B, H, N)`` through the folded ``W_s W_out``."""
    with _no_autocast(h):
        return _left(fold[0], h.to(fold[0].dtype)) + fold[1]


class FastSAIR(nn.Module):
    """A view of a :class:`SAIR`'s weights arranged for fast inference (no parameters of its own)."""

    def __init__(self, model: SAIR):
        super().__init__()
        self.model = model
        self.cfg = model.cfg

    # ---- weights, split the way the rewrites need them ------------------------------------
    def _sir_first(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        lin = self.model.sir.mlp.linears[0]
        f = self.model.sir.latent_dim
        return lin.weight[:, :f], lin.weight[:, f:f + 2], lin.weight[:, f + 2:], lin.bias

    def _air_first(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        lin = self.model.air.mlp.linears[0]
        fz = self.model.air.app_dim * 9
        fs = fz + self.model.air.sem_dim
        w = lin.weight
        return w[:, :fz], w[:, fz:fs], w[:, fs:fs + 2], w[:, fs + 2:], lin.bias

    # ---- per image ----------------------------------------------------------------------
    def semantic_precompute(self, embedding: Tensor, holes: Tensor) -> Tensor:
        """SIR's first layer, feature part, at every latent cell: ``(B, hidden, h, w)``."""
        w_feat, _, _, bias = self._sir_first()
        lat = torch.cat([embedding, holes], dim=1)
        k = 3 if self.model.sir.unfold else 1
        weight = w_feat.reshape(w_feat.shape[0], lat.shape[1], k, k)
        return F.conv2d(lat, weight, bias, padding=k // 2)

    def _fold(self, sem_pre: Tensor) -> tuple[Tensor, Tensor]:
        """SIR's output layer folded into AIR's semantic block, once per call, in the features'
        precision: ``(W_s W_out, W_s b_out)``."""
        _, w_s, _, _, _ = self._air_first()
        out = self.model.sir.mlp.linears[-1]
        with _no_autocast(sem_pre):
            return ((w_s @ out.weight).to(sem_pre.dtype), (w_s @ out.bias).to(sem_pre.dtype).unsqueeze(-1))

    def semantic_term(self, sem_pre: Tensor, centres: Tensor, cell: Tensor) -> Tensor:
        """AIR's first-layer semantic term ``W_s S(x)`` at ``centres (B, N, 2)``: ``(B, hidden, N)``.

        Eagerly on a CPU it runs in pieces of :data:`CPU_PIECE` centres (the same numbers): many
        centres at once would hold 4 x N x hidden floats per layer and run at memory speed."""
        fold = self._fold(sem_pre)
        n = centres.shape[1]
        if not torch.compiler.is_exporting() and centres.device.type == "cpu" and n > CPU_PIECE:
            return torch.cat([self._semantic_term(sem_pre, centres[:, i:i + CPU_PIECE], cell, fold)
                              for i in range(0, n, CPU_PIECE)], dim=2)
        return self._semantic_term(sem_pre, centres, cell, fold)

    def _semantic_term(self, sem_pre: Tensor, centres: Tensor, cell: Tensor,
                       fold: tuple[Tensor, Tensor]) -> Tensor:
        _, w_rel, w_cell, _ = self._sir_first()
        size = sem_pre.shape[-2:]
        row, col, rel, weight = _neighbour_major(local_neighbours(centres, size))
        h = _ensemble_cf(sem_pre, row, col, rel, weight, w_rel, scale_cell(cell, size) @ w_cell.T,
                         self.model.sir.mlp.linears[1:-1])
        return _folded(h, fold)

    def semantic_term_grid(self, sem_pre: Tensor, ys: Tensor, xs: Tensor, cell: Tensor, rows: bool = False) -> Tensor:
        """:meth:`semantic_term` at the centres of the grid ``ys (kh,) x xs (kw,)`` (row-major),
        a tile's pixels: ``(B, hidden, kh*kw)`` (``rows``: ``(B, kh*kw, hidden)``).

        Neighbours are separable on a grid (:func:`grid_neighbours`): their features are 1-D
        gathers of the small latent grid, not a gather with an index per centre and channel
        (exported, that index was an ``Expand`` of gigabytes per tile at the paper's widths, and
        made ONNX Runtime's tile graph 2x slower than torch's). The tile's precompute adds it in
        bands instead (:meth:`_add_semantic_rows`, :meth:`_add_semantic_bands`)."""
        fold = self._fold(sem_pre)
        if _rows_here(sem_pre):
            b, hidden = sem_pre.shape[0], fold[0].shape[0]
            term = fold[1].to(sem_pre.dtype).view(1, hidden, 1, 1).expand(b, hidden, ys.shape[0], xs.shape[0])
            term = term.contiguous(memory_format=torch.channels_last)
            out = self._add_semantic_rows(term, sem_pre, ys, xs, cell, fold).flatten(2)
            return out.transpose(1, 2) if rows else out
        with _no_autocast(sem_pre):
            out = self._semantic_band(*self._semantic_grid(sem_pre, ys, xs, cell), slice(None), xs.shape[0])
            if rows:
                return torch.matmul(out.to(fold[0].dtype), fold[0].t()) + fold[1].t()
            return torch.matmul(fold[0], out.transpose(1, 2).to(fold[0].dtype)) + fold[1]

    def _add_semantic_rows(self, p: Tensor, sem_pre: Tensor, ys: Tensor, xs: Tensor, cell: Tensor,
                           fold: tuple[Tensor, Tensor]) -> Tensor:
        """Adds :meth:`semantic_term_grid` at ``ys x xs`` but its bias (``W_s b_out``) to the
        channels-last ``p (B, hidden, kh, kw)`` in place, in bands of whole rows of about
        :func:`_piece` centres: each band's ensemble goes through the folded ``W_s W_out``
        straight into its rows of ``p`` (one product with the add inside), so no
        ``hidden x kh x kw`` term is ever held or added in a pass of its own."""
        b, hidden, kh, kw = p.shape
        with _no_autocast(p):
            w_t = fold[0].t().to(p.dtype)
            rows = p.permute(0, 2, 3, 1).view(b, kh * kw, hidden)  # channels last: a view
            grid = self._semantic_grid(sem_pre, ys, xs, cell)
            step = max(1, _piece(sem_pre) // kw)
            for i in range(0, kh, step):
                band = self._semantic_band(*grid, slice(i, i + step), kw).to(p.dtype)  # (B, n, H)
                target = rows[:, i * kw:i * kw + band.shape[1]]
                if b == 1:
                    target[0].addmm_(band[0], w_t)
                else:
                    target.baddbmm_(band, w_t.expand(b, *w_t.shape))
        return p

    def _add_semantic_bands(self, p: Tensor, sem_pre: Tensor, ys: Tensor, xs: Tensor, cell: Tensor,
                            fold: tuple[Tensor, Tensor], sir_layers: list[tuple[Tensor, Tensor]]) -> Tensor:
        """:meth:`_add_semantic_rows` as an exported graph runs it: a loop over bands of
        :data:`EXPORT_BAND_ROWS` rows (:func:`~sair_deploy.model.bands.add_semantic_bands`, an
        ONNX ``Scan``), each band's ensemble through the folded ``W_s W_out`` with its rows of
        ``p`` as the addend. ``p (1, n, kw, hidden)``: rows, ``n`` the ``kh = len(ys)`` rows
        rounded up to whole bands (:func:`~sair_deploy.model.bands.banded_rows`); ``sir_layers``:
        SIR's hidden layers from :meth:`_sir_graph_layers`, whose carried bias the caller has put
        in ``p``."""
        lat, nb, row_terms, col_terms = self._semantic_grid(sem_pre, ys, xs, cell)
        kh, kw = ys.shape[0], xs.shape[0]
        return add_semantic_bands(p, lat, nb.rows, nb.cols, torch.stack(row_terms), torch.stack(col_terms),
                                  nb.weight.view(4, kh, kw), lambda h: hidden_graph(h.relu(), sir_layers),
                                  fold[0].t().to(p.dtype), EXPORT_BAND_ROWS)

    def _sir_graph_layers(self) -> tuple[list[tuple[Tensor, Tensor]], Tensor | None]:
        """SIR's hidden layers as the exported graphs run them (:func:`graph_layers`)."""
        return graph_layers([(lin.weight, lin.bias) for lin in self.model.sir.mlp.linears[1:-1]])

    def _semantic_grid(self, sem_pre: Tensor, ys: Tensor, xs: Tensor, cell: Tensor):
        """What :meth:`_semantic_band` reads: the channels-last latent grid with the cell term
        added, the grid's neighbours, and the first layer's coordinate part, separable on a grid
        (a row term plus a column term)."""
        size = sem_pre.shape[-2:]
        nb = grid_neighbours(ys, xs, size)
        _, w_rel, w_cell, _ = self._sir_first()
        dt = sem_pre.dtype
        with _no_autocast(sem_pre):
            # the latent grid is a few hundred cells: its transpose is free and each gathered
            # feature is a contiguous row
            w_rel = w_rel.to(dt)
            cell_term = (scale_cell(cell, size) @ w_cell.T).to(dt).unsqueeze(1)  # (1, 1, 1, C)
            lat = sem_pre.permute(0, 2, 3, 1) + cell_term  # (B, gh, gw, C)
            row_terms = [r.to(dt)[:, None] * w_rel[:, 0] for r in nb.rel_rows]  # (kh, C) each
            col_terms = [c.to(dt)[:, None] * w_rel[:, 1] for c in nb.rel_cols]  # (kw, C) each
        return lat, nb, row_terms, col_terms

    def _semantic_band(self, lat: Tensor, nb, row_terms: list[Tensor], col_terms: list[Tensor],
                       rows: slice, kw: int) -> Tensor:
        """:func:`~sair_deploy.model.bands.semantic_band` on the grid rows ``rows``, the hidden
        layers 2-D products with bias and ReLU fused (oneDNN post-ops on the rows path):
        ``(B, n, H)`` in float32."""
        return semantic_band(lat, nb.rows, nb.cols, row_terms, col_terms, nb.weight.view(4, -1, kw), rows,
                             lambda h: _hidden_rows(h, self.model.sir.mlp.linears[1:-1]))

    def appearance_precompute(self, app_padded: Tensor, semantic: tuple[Tensor, Tensor, Tensor, Tensor] | None,
                              rows_out: bool = False) -> Tensor:
        """AIR's first layer, all but the per-query part, at every pixel of a block.

        ``app_padded (B, C, h+2, w+2)``: appearance features of the block with a 1-pixel border
        (zeros beyond the image, as LIIF's unfold pads), followed by the 3 base-colour channels
        for a residual model; ``semantic``: ``(sem_pre, ys, xs, cell)``, the semantic term's
        inputs at the block's pixel centres (:meth:`semantic_term_grid`), or None.
        Returns ``(B, hidden, h, w)`` (``hidden + 3`` channels, the base last, if residual),
        channels last on the rows path (:func:`_rows_here`: eagerly on a CPU or a CUDA GPU);
        with ``rows_out`` as rows, ``(B, h, w, hidden(+3))`` (the tile graph's output: a view on
        the rows path). An exported tile graph adds the semantic term to its rows in a loop over
        whole bands (:func:`exported_bands`, :meth:`_add_semantic_bands`): there ``h`` is
        ``len(ys)`` rounded up to whole bands, and the rows past ``len(ys)`` are never read.
        """
        w_z, _, _, _, bias = self._air_first()
        c = self.model.air.app_dim
        rows = _rows_here(app_padded)
        banded = rows_out and exported_bands(semantic is not None)
        if rows:  # channels last: 2-4x faster on a CPU, rows for the queries
            app_padded = app_padded.contiguous(memory_format=torch.channels_last)
        fold = term = None
        if semantic is not None and (rows or banded):  # the term's bias rides in the convolution's
            fold = self._fold(semantic[0])
            bias = bias + fold[1][:, 0].to(bias.dtype)
            if banded:  # SIR's hidden layers as the loop runs them (hidden_graph)
                sir_layers, carried = self._sir_graph_layers()
                if carried is not None:  # what they leave out of their activations
                    bias = bias + (fold[0] @ carried.to(fold[0].dtype)).to(bias.dtype)
        elif semantic is not None:  # training: the whole term at once
            term = self.semantic_term_grid(*semantic, rows=rows_out)
        p = F.conv2d(app_padded[:, :c], w_z.reshape(w_z.shape[0], c, 3, 3), bias)
        if fold is not None and rows:
            p = self._add_semantic_rows(p, *semantic, fold)
        base, channels = app_padded[:, c:, 1:-1, 1:-1], 1
        if rows_out:
            # exported, the transpose follows the convolution: ONNX Runtime folds it into the
            # reorder out of its blocked convolution layout
            p, base, channels = p.permute(0, 2, 3, 1), base.permute(0, 2, 3, 1), -1
        if banded:
            p = self._add_semantic_bands(p, *semantic, fold, sir_layers)
        if term is not None:
            p = p + term.reshape(p.shape).to(p.dtype)
        if self.cfg.residual:  # the base colours ride along as 3 extra channels
            p = torch.cat([p, base], dim=channels)
        return p

    # ---- per query ----------------------------------------------------------------------
    def query(self, air_pre: Tensor, grid: Tensor, coord: Tensor, cell: Tensor) -> Tensor:
        """RGB at ``coord (B, Q, 2)`` from a precomputed block.

        ``grid = [H, W, row0, col0]`` (float): the full image's size and where the block
        ``air_pre (B, hidden, h, w)`` starts in it. Every neighbour of every query must lie in
        the block; the runtime plans blocks with a margin so that it does.
        """
        size, origin = grid[:2], grid[2:].long()
        base = None
        if self.cfg.residual:  # the base colours ride along as the last 3 channels
            base = sample_base(self._base(air_pre), coord, self.cfg.base, origin, size)
        return self._answer(air_pre, origin, size, _neighbour_major(local_neighbours(coord, size)), cell, base)

    def query_grid(self, air_pre: Tensor, grid: Tensor, ys: Tensor, xs: Tensor, cell: Tensor) -> Tensor:
        """:meth:`query` at the centres of the grid ``ys (kh,) x xs (kw,)`` (row-major), an output
        rectangle: ``(B, kh*kw, 3)``, the same numbers. The neighbours and the base's filter taps
        are found per axis (:func:`grid_neighbours`, :func:`sample_base_grid`) instead of per
        query: the coordinate work of a call shrinks from ``Q`` to ``kh + kw``."""
        size, origin = grid[:2], grid[2:].long()
        nb = grid_neighbours(ys, xs, size)
        kh, kw = ys.shape[0], xs.shape[0]
        iy, ix = (0, 0, 1, 1), (0, 1, 0, 1)  # local_neighbours' order: 2 * iy + ix
        per_row = lambda t: torch.stack([t[i] for i in iy])[:, :, None].expand(4, kh, kw)  # noqa: E731
        per_col = lambda t: torch.stack([t[i] for i in ix])[:, None, :].expand(4, kh, kw)  # noqa: E731
        row = per_row(nb.rows).reshape(1, 4, kh * kw)
        col = per_col(nb.cols).reshape(1, 4, kh * kw)
        rel = torch.stack([per_row(nb.rel_rows), per_col(nb.rel_cols)], dim=-1).reshape(1, 4, kh * kw, 2)
        base = None
        if self.cfg.residual:
            base = sample_base_grid(self._base(air_pre), ys, xs, self.cfg.base, origin, size)
        return self._answer(air_pre, origin, size, (row, col, rel, nb.weight.unsqueeze(0)), cell, base)

    def _base(self, air_pre: Tensor) -> Tensor | Callable[[Tensor, Tensor], Tensor]:
        """A residual block's base colours, its last 3 channels, in float32; while exporting, a
        reader of them from the block's rows (:func:`~sair_deploy.model.liif.rows_gather`)."""
        if torch.compiler.is_exporting():
            return rows_gather(air_pre.permute(0, 2, 3, 1), air_pre.shape[1] - 3, 3)
        return air_pre[:, air_pre.shape[1] - 3:].float()

    def _answer(self, air_pre: Tensor, origin: Tensor, size: Tensor, nb: tuple[Tensor, Tensor, Tensor, Tensor],
                cell: Tensor, base: Tensor | None) -> Tensor:
        """AIR's MLP, ensembled, at queries whose neighbours ``nb`` (neighbour-major: see
        :func:`_neighbour_major`) lie in the block ``air_pre`` starting at ``origin``; plus the
        base already sampled there. ``(B, Q, 3)``."""
        _, _, w_rel, w_cell, _ = self._air_first()
        row, col, rel, weight = nb
        hidden = air_pre.shape[1] - (3 if self.cfg.residual else 0)
        lins = self.model.air.mlp.linears
        args = (air_pre, row - origin[0], col - origin[1], rel, weight, w_rel,
                scale_cell(cell, size) @ w_cell.T, lins[1:-1], hidden)
        if torch.compiler.is_exporting():  # the graphs' block is rows: the permute undoes theirs
            rgb = _ensemble_rows_graph(air_pre.permute(0, 2, 3, 1), *args[1:-1], out_layer=lins[-1])
            return rgb if base is None else rgb + base
        if not _is_rows(air_pre):
            return self._rgb(_ensemble_cf(*args), base)
        if not _gpu_rows(air_pre):
            return self._rgb(_ensemble_rows(*args), base)
        rgb = _ensemble_rows(*args, out_layer=lins[-1]) + lins[-1].bias.float()  # RGB per neighbour
        return rgb if base is None else rgb + base

    def _rgb(self, h: Tensor, base: Tensor | None) -> Tensor:
        """AIR's RGB layer (float32) on the ensembled hidden activations ``h (B, H, Q)``, plus the
        base already interpolated at the queries (a residual model): ``(B, Q, 3)``."""
        out = self.model.air.mlp.linears[-1]
        with _no_autocast(h):
            rgb = (_left(out.weight, h.float()) + out.bias.unsqueeze(-1)).transpose(1, 2)
        return rgb if base is None else rgb + base

    # ---- whole-image conveniences (tests, training) ---------------------------------------
    def precompute(self, feats: Features) -> Tensor:
        """AIR's precomputed first layer over the whole image, ``(B, hidden, H, W)``."""
        from ..coords import centres_1d

        b, _, h, w = feats.app.shape
        semantic = None
        if self.cfg.use_semantic:
            sem_pre = self.semantic_precompute(feats.embedding, feats.holes)
            ys, xs = (torch.from_numpy(centres_1d(n)).to(feats.app) for n in (h, w))
            semantic = (sem_pre, ys, xs, pixel_cell(h, w, feats.app))
        app = torch.cat([feats.app, feats.base], dim=1) if self.cfg.residual else feats.app
        return self.appearance_precompute(F.pad(app, (1, 1, 1, 1)), semantic)

    def query_dense(self, feats: Features, coord: Tensor, cell: Tensor) -> Tensor:
        """RGB at ``coord`` via a whole-image precompute (equals ``SAIR.query``)."""
        pre = self.precompute(feats)
        h, w = feats.app.shape[-2:]
        grid = torch.tensor([h, w, 0, 0], dtype=coord.dtype, device=coord.device)
        return self.query(pre, grid, coord, cell)

    def query_sparse(self, feats: Features, coord: Tensor, cell: Tensor) -> Tensor:
        """RGB at a few coordinates without a dense precompute (training: few queries per image).

        The same function again: AIR's first layer is applied to gathered 3x3 neighbourhoods,
        SIR uses its precomputed first layer and the folded output.
        """
        w_z, _, w_rel, w_cell, bias = self._air_first()
        b, q = coord.shape[:2]
        size = feats.app.shape[-2:]
        nb = local_neighbours(coord, size)
        row, col, rel, weight = _neighbour_major(nb)
        z = gather_channels(unfold3x3(feats.app), row, col)  # (B, 9C, 4, Q)
        first = _left(w_z, z.reshape(b, z.shape[1], 4 * q)) + bias.unsqueeze(-1)
        if self.cfg.use_semantic:
            sem_pre = self.semantic_precompute(feats.embedding, feats.holes)
            pc = pixel_cell(size[0], size[1], coord)
            centres = nb.centre.transpose(1, 2).reshape(b, 4 * q, 2)  # neighbour-major, as ``first``
            first = first + self.semantic_term(sem_pre, centres, pc)
        h = _mlp_cf(first.view(b, -1, 4, q), rel, weight, w_rel, scale_cell(cell, size) @ w_cell.T,
                    self.model.air.mlp.linears[1:-1])
        base = sample_base(feats.base, coord, self.cfg.base) if self.cfg.residual else None
        return self._rgb(h, base)
