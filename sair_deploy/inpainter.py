"""Inpainter: ``set_image`` once, then ``inpaint(scale)`` as many times as you like.

Data flows one way: image + mask -> per-image features (the semantic grid once; appearance
features by overlapping tiles) -> per-block precompute -> per-query RGB in chunks -> pixels.
All learned math runs inside the backend's graphs; this module only plans and moves arrays.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from tqdm.auto import tqdm

from .backends.base import Backend, in_pieces
from .coords import cell_for, centres_1d, make_coord, output_shape, output_span
from .errors import InputError
from .preprocess import semantic_input
from .tiling import blend_weight, pad_to_multiple, plan_blocks, plan_tiles

MAX_OUTPUT_PIXELS = 400_000_000  # beyond this an output is almost certainly a typo in --scale
_MARGIN = 2  # input pixels around a block that its queries' neighbours may reach (1 suffices)


class Inpainter:
    """Fills the holes of an image, at any output scale, through a :class:`Backend`.

    ``tile``/``overlap``: AppEncoder tiles (cores of ``tile`` pixels, ``overlap`` pixels of
    context each side; ``None`` = the encoder's receptive radius, exact up to float error).
    ``block``: query-phase blocks (input pixels). ``chunk``: queries per graph call.
    ``cache_mb``: precomputed blocks kept for later calls (other scales reuse them).
    ``reference=True`` evaluates the literal paper formulation (torch backend only; slow).
    """

    def __init__(self, backend: Backend, tile: int = 512, overlap: int | None = None,
                 block: int = 64, chunk: int = 32768, cache_mb: int = 512,
                 progress: bool = False, reference: bool = False):
        if tile % 4 or tile <= 0:
            raise InputError(f"tile size must be a positive multiple of 4, got {tile}")
        self.backend = backend
        self.config = backend.config
        self.tile = tile
        radius = self.config.app.receptive_radius()
        self.overlap = radius + (-radius) % 4 if overlap is None else overlap
        self.block = block
        self.chunk = chunk
        self.cache_bytes = cache_mb * 2**20
        self.progress = progress
        self.reference = reference
        if reference and not hasattr(backend, "reference_query"):
            raise InputError("the reference path needs the torch backend")

    # ---- per image ------------------------------------------------------------------------
    def set_image(self, image: np.ndarray, mask: np.ndarray) -> None:
        """``image (H, W, 3)`` float in [0, 1], ``mask (H, W)`` bool (True = hole)."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"image must be H x W x 3, got shape {image.shape}")
        if mask.shape != image.shape[:2]:
            raise InputError(f"mask {mask.shape[1]}x{mask.shape[0]} does not match image "
                             f"{image.shape[1]}x{image.shape[0]}")
        self.image = np.ascontiguousarray(image, dtype=np.float32)
        self.mask = mask.astype(bool)
        self.height, self.width = self.mask.shape
        h, w = self.height, self.width
        self.sem_pre = None
        self._sem_inputs = None
        if self.config.use_semantic:
            sem = self.config.semantic
            sem_image, sem_valid = semantic_input(self.image, self.mask, sem.max_side, sem.patch_size)
            self._sem_inputs = (sem_image[None], sem_valid[None])
            if not self.reference:
                self.sem_pre = self.backend.semantic(*self._sem_inputs)
        self._app_image = self.image.transpose(2, 0, 1)
        if self.config.fill != "zero":  # global, so once on the whole image, not per tile
            self._app_image = self.backend.fill(self._app_image[None].copy(),
                                                self.mask[None, None].astype(np.float32))[0]
        self.pixel_cell = np.array([[[2.0 / h, 2.0 / w]]], dtype=np.float32)
        self._tiles = plan_tiles(h, w, self.tile, self.overlap)
        self._tile_done = np.zeros(len(self._tiles), dtype=bool)
        self._app: np.ndarray | None = None
        self._app_weight: np.ndarray | None = None
        self._blocks: OrderedDict[tuple[int, int, int, int], np.ndarray] = OrderedDict()
        self._ref_feats = None

    # ---- appearance features, by tiles ----------------------------------------------------
    def _ensure_appearance(self, needed: np.ndarray) -> None:
        """Run the AppEncoder on every tile whose window touches a ``needed`` pixel."""
        h, w = self.height, self.width
        todo = [i for i, t in enumerate(self._tiles) if not self._tile_done[i]
                and needed[t.window[0]:t.window[1], t.window[2]:t.window[3]].any()]
        if not todo:
            return
        img = self._app_image
        msk = self.mask[None].astype(np.float32)
        for i in tqdm(todo, desc="features", disable=not self.progress or len(todo) < 2, leave=False):
            t = self._tiles[i]
            r0, r1, c0, c1 = t.inner
            x, _ = pad_to_multiple(np.concatenate([img[:, r0:r1, c0:c1], msk[:, r0:r1, c0:c1]]), 4)
            feats = self.backend.appearance(x[None, :3].copy(), x[None, 3:].copy())[0]
            if self._app is None:  # channels as the graph gives them (a residual model adds 3)
                self._app = np.zeros((feats.shape[0], h, w), dtype=np.float32)
                self._app_weight = np.zeros((h, w), dtype=np.float32)
            wr0, wr1, wc0, wc1 = t.window
            wgt = blend_weight(t, h, w)
            self._app[:, wr0:wr1, wc0:wc1] += wgt * feats[:, wr0 - r0:wr1 - r0, wc0 - c0:wc1 - c0]
            self._app_weight[wr0:wr1, wc0:wc1] += wgt
            self._tile_done[i] = True

    def _app_normalised(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Blended appearance features on rows r0..r1, cols c0..c1, zero outside the image."""
        h, w = self.height, self.width
        out = np.zeros((self._app.shape[0], r1 - r0, c1 - c0), dtype=np.float32)
        a0, a1, b0, b1 = max(r0, 0), min(r1, h), max(c0, 0), min(c1, w)
        wgt = self._app_weight[a0:a1, b0:b1]
        out[:, a0 - r0:a1 - r0, b0 - c0:b1 - c0] = self._app[:, a0:a1, b0:b1] / np.maximum(wgt, 1e-12)
        return out

    # ---- queries, by blocks ----------------------------------------------------------------
    def _block_pre(self, region: tuple[int, int, int, int]) -> np.ndarray:
        if region in self._blocks:
            self._blocks.move_to_end(region)
            return self._blocks[region]
        r0, r1, c0, c1 = region
        app = self._app_normalised(r0 - 1, r1 + 1, c0 - 1, c1 + 1)[None]
        if self.config.use_semantic:
            centres = make_coord((self.height, self.width), (r0, r1), (c0, c1))[None]
            pre = self.backend.precompute(app, self.sem_pre, centres, self.pixel_cell)
        else:
            pre = self.backend.precompute(app, None, None, None)
        self._blocks[region] = pre
        while sum(p.nbytes for p in self._blocks.values()) > self.cache_bytes and len(self._blocks) > 1:
            self._blocks.popitem(last=False)
        return pre

    def _plan_queries(self, out_h: int, out_w: int, holes_only: bool):
        """Per block: the region to precompute, the output pixels it answers and their
        coordinates. The pixels are ``(rows, cols)`` index arrays (hole pixels at scale 1) or
        a rectangle ``(slice, slice)`` of the output."""
        h, w = self.height, self.width
        same = holes_only and (out_h, out_w) == (h, w)
        ys_all = centres_1d(out_h)
        xs_all = centres_1d(out_w)
        for r0, r1, c0, c1 in plan_blocks(h, w, self.block):
            oy0, oy1 = output_span(h, out_h, r0, r1)
            ox0, ox1 = output_span(w, out_w, c0, c1)
            if oy0 >= oy1 or ox0 >= ox1:
                continue
            if same:  # only the hole pixels, and only the input around them is read
                yy, xx = np.nonzero(self.mask[oy0:oy1, ox0:ox1])
                if yy.size == 0:
                    continue
                yy, xx = yy + oy0, xx + ox0
                r0, r1, c0, c1 = yy.min(), yy.max() + 1, xx.min(), xx.max() + 1
                coord = np.stack([ys_all[yy], xs_all[xx]], axis=-1)
                pixels = (yy, xx)
            else:
                coord = np.stack(np.meshgrid(ys_all[oy0:oy1], xs_all[ox0:ox1], indexing="ij"),
                                 axis=-1).reshape(-1, 2)
                pixels = (slice(oy0, oy1), slice(ox0, ox1))
            region = (max(r0 - _MARGIN, 0), min(r1 + _MARGIN, h), max(c0 - _MARGIN, 0), min(c1 + _MARGIN, w))
            region = tuple(int(v) for v in region)
            yield region, pixels, coord

    @staticmethod
    def _put(out: np.ndarray, pixels, rgb: np.ndarray) -> None:
        """Write a block's answers where :meth:`_plan_queries` said they go."""
        rows, cols = pixels
        if isinstance(rows, slice):
            out[rows, cols] = rgb.reshape(rows.stop - rows.start, cols.stop - cols.start, 3)
        else:
            out[rows, cols] = rgb

    def _query_block(self, run, coord: np.ndarray) -> np.ndarray:
        """All of a block's answers, ``chunk`` queries per graph call."""
        return in_pieces(run, coord[None], self.chunk)[0]

    def inpaint(self, scale: float = 1.0) -> np.ndarray:
        """The image with its holes filled, ``round(S*H) x round(S*W) x 3`` float32 in [0, 1].

        At scale 1 only hole pixels are queried (the reference path queries every pixel, as the
        paper's formulation does); known pixels are returned exactly as given.
        """
        if not np.isfinite(scale) or scale < 1:
            raise InputError(f"--scale must be a number >= 1, got {scale}")
        out_h, out_w = output_shape((self.height, self.width), scale)
        if out_h * out_w > MAX_OUTPUT_PIXELS:
            raise InputError(f"output {out_w}x{out_h} is too large (over {MAX_OUTPUT_PIXELS // 10**6} "
                             f"megapixels); lower --scale")
        same = (out_h, out_w) == (self.height, self.width)
        out = self.image.copy() if same else np.zeros((out_h, out_w, 3), dtype=np.float32)
        cell = cell_for((out_h, out_w))[None]
        if self.reference:  # literally: every output pixel, then the known ones put back
            out = self._inpaint_reference(out, list(self._plan_queries(out_h, out_w, False)), cell)
            if same:
                out[~self.mask] = self.image[~self.mask]
            return out
        if same:  # appearance features are needed around the holes only
            needed = np.zeros((self.height, self.width), dtype=bool)
            for (r0, r1, c0, c1), _, _ in self._plan_queries(out_h, out_w, True):
                needed[max(r0 - 1, 0):r1 + 1, max(c0 - 1, 0):c1 + 1] = True
        else:
            needed = np.ones((self.height, self.width), dtype=bool)
        self._ensure_appearance(needed)
        n_blocks = len(plan_blocks(self.height, self.width, self.block))
        plan = self._plan_queries(out_h, out_w, True)  # lazy: coordinates are made block by block
        for region, pixels, coord in tqdm(plan, desc=f"inpaint x{scale:g}", total=n_blocks,
                                          disable=not self.progress, unit="block"):
            pre = self._block_pre(region)
            grid = np.array([self.height, self.width, region[0], region[2]], dtype=np.float32)
            rgb = self._query_block(lambda c: self.backend.query(pre, grid, c, cell), coord)
            self._put(out, pixels, rgb)
        return np.clip(out, 0.0, 1.0, out=out)

    def _inpaint_reference(self, out: np.ndarray, plan, cell: np.ndarray) -> np.ndarray:
        if self._ref_feats is None:
            img, _ = pad_to_multiple(self.image.transpose(2, 0, 1), 4)
            msk, _ = pad_to_multiple(self.mask[None].astype(np.float32), 4)
            if img.shape[-2:] != (self.height, self.width):
                raise InputError("the reference path needs an image whose sides are multiples of 4")
            sem = self._sem_inputs or (None, None)
            self._ref_feats = self.backend.reference_features(img[None], msk[None], *sem)
        for _, pixels, coord in plan:
            rgb = self._query_block(lambda c: self.backend.reference_query(self._ref_feats, c, cell), coord)
            self._put(out, pixels, rgb)
        return np.clip(out, 0.0, 1.0, out=out)
