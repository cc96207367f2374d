"""Inpainter: ``set_image`` once, then ``inpaint(scale)`` as many times as you like.

Data flows one way: image + mask -> per-image features -> per-tile precompute -> queries ->
pixels. The host plans with a few integers (the region, its tiles, output rectangles, spans of
hole pixels); the backend's graphs do all the work on its device. Per image the host uploads the
8-bit image and the hole indices once and downloads the 8-bit result once; every intermediate
(the semantic encoder's input too) is made on the device and stays a device handle.
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from .backends.base import Backend
from .coords import cell_for, make_coord, output_shape
from .errors import InputError
from .preprocess import semantic_input, semantic_size
from .tiling import (
    RuntimePlan,
    Tile,
    holes_by_tile,
    output_edges,
    plan_tiles,
    region_around,
    tile_outputs,
)

FLIPS = {1: (), 2: ((1,),), 4: ((1,), (0,), (0, 1))}  # the mirrored views: axes flipped
MAX_OUTPUT_PIXELS = 400_000_000  # beyond this an output is almost certainly a typo in --scale
_PLAN = RuntimePlan()
_MARGIN = _PLAN.margin  # input pixels around a tile's core that its queries' neighbours may reach
# Known pixels kept around the holes at scale 1 beyond what the encoder reads, so the fill sees
# the colours around each hole (the fill is the only part that reaches further).
_FILL_CONTEXT = 32


def to_uint8(image: np.ndarray) -> np.ndarray:
    """An image as 8 bits: uint8 as is, floats in [0, 1] rounded (the runtime works on 8 bits)."""
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


@dataclass
class _Region:
    """A window of the image that inpaint calls work on, with its device state."""

    r0: int
    r1: int
    c0: int
    c1: int
    tiles: list[list[Tile]]
    plan: np.ndarray | None = None  # the graphs' ``region`` vector: [r0, rh, c0, rw, gh, gw]
    source: object = None  # device handles: the 8-bit image the region lies in (see _region);
    holes: object = None  # region-flat hole indices grouped by tile, then a sentinel;
    prepared: object = None  # the prepared (filled) float region and its mask
    mask: object = None
    hole_starts: np.ndarray | None = None  # where each tile's holes start in ``holes``
    host_holes: np.ndarray | None = None
    cache: OrderedDict = field(default_factory=OrderedDict)  # tile index -> air_pre handle

    @property
    def shape(self) -> tuple[int, int]:
        return self.r1 - self.r0, self.c1 - self.c0


class Inpainter:
    """Fills the holes of an image, at any output scale, through a :class:`Backend`.

    ``tile``/``overlap``: AppEncoder tiles (cores of ``tile`` pixels, ``overlap`` pixels of
    context each side; ``None`` = the encoder's receptive radius, so tiles equal a whole-image
    pass up to float error). ``chunk``: queries per graph call (``None``: what the backend
    wants: cache-sized on a CPU, whole tiles on a GPU). ``cache_mb``: tile precomputes kept for
    later calls (other scales reuse them). ``reference=True`` evaluates the literal paper
    formulation (torch backend only; slow). ``flips``: 1 (default), 2 or 4 -- the self-ensemble:
    the image is also inpainted mirrored left-right (2) and upside down (4), and the results,
    mirrored back, are averaged before the conversion to 8 bits (each flip costs one more pass;
    a convolutional encoder is not mirror-symmetric, so the average is a better estimate).
    After each :meth:`inpaint`, :attr:`stats` holds the image's graph calls, bytes to and from
    the device and the host time outside the backend.
    """

    def __init__(self, backend: Backend, tile: int = _PLAN.tile, overlap: int | None = None,
                 chunk: int | None = None, cache_mb: int = 1024, progress: bool = False,
                 reference: bool = False, flips: int = 1):
        if tile % 4 or tile <= 0:
            raise InputError(f"tile size must be a positive multiple of 4, got {tile}")
        radius = backend.config.app.receptive_radius()
        overlap = radius + (-radius) % 4 if overlap is None else overlap
        if overlap % 4 or overlap < _MARGIN + 2:
            raise InputError(f"tile overlap must be a multiple of 4 and at least {_MARGIN + 2}, got {overlap}")
        if chunk is not None and chunk < 1:
            raise InputError(f"chunk must be at least 1 query, got {chunk}")
        if flips not in FLIPS:
            raise InputError(f"flips must be one of {', '.join(map(str, FLIPS))}, got {flips}")
        self.backend = backend
        self.config = backend.config
        self.tile = tile
        self.overlap = overlap
        self.chunk = chunk or backend.query_chunk  # the plan's chunk is the GPU backends' own
        self.cache_bytes = cache_mb * 2**20
        self.progress = progress
        self.reference = reference
        self.flips = flips
        self.stats: dict = {}
        if reference and not hasattr(backend, "reference_query"):
            raise InputError("the reference path needs the torch backend")

    # ---- per image ------------------------------------------------------------------------
    def set_image(self, image: np.ndarray, mask: np.ndarray) -> None:
        """``image (H, W, 3)`` uint8 (or float in [0, 1], rounded to 8 bits), ``mask (H, W)``
        bool (True = hole). Nothing runs until the first :meth:`inpaint`."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"image must be H x W x 3, got shape {image.shape}")
        if mask.shape != image.shape[:2]:
            raise InputError(f"mask {mask.shape[1]}x{mask.shape[0]} does not match image "
                             f"{image.shape[1]}x{image.shape[0]}")
        self.given = image
        self.image = to_uint8(image)
        self.mask = np.ascontiguousarray(mask, dtype=bool)
        self.height, self.width = self.mask.shape
        self._forget_computed()
        self.backend.counters.reset()

    def reset(self) -> None:
        """Let go of the image, its mask and everything computed for them (host and device)."""
        self.given = self.image = self.mask = None
        self._forget_computed()

    def _forget_computed(self) -> None:
        """Drop every device handle and cache made for the current image."""
        self._regions: dict[str, _Region] = {}
        self._image_dev = None
        self._sem_pre = None
        self._ref_feats = None
        self._views: dict[tuple[int, ...], Inpainter] = {}

    def _image(self):
        """The whole 8-bit image on the device, uploaded once per image."""
        if self._image_dev is None:
            self._image_dev = self.backend.upload(self.image[None])
        return self._image_dev

    def _semantic(self, reg: _Region):
        """SIR's precompute for the whole image, once (``None`` for the LIIF ablation); any
        region's hole list holds every hole, and its source is the whole image."""
        if self._sem_pre is None and self.config.use_semantic:
            self._sem_pre = self.backend.run("semantic", reg.source, reg.holes, reg.plan)
        return self._sem_pre

    def _region(self, kind: str) -> _Region:
        """The region for ``kind``: ``"holes"`` (scale 1: around the holes) or ``"full"``,
        uploaded and prepared (filled) on the device the first time it is asked for."""
        if kind in self._regions:
            return self._regions[kind]
        h, w = self.height, self.width
        if kind == "holes":
            r0, r1, c0, c1 = region_around(self.mask, self.overlap + _MARGIN + 1 + _FILL_CONTEXT)
        else:
            r0, r1, c0, c1 = 0, h, 0, w
        reg = _Region(r0, r1, c0, c1, plan_tiles(r1 - r0, c1 - c0, self.tile, self.overlap, _MARGIN))
        be = self.backend
        holes, reg.hole_starts = holes_by_tile(self.mask[r0:r1, c0:c1], self.tile)
        reg.host_holes = holes
        sentinel = np.int32((r1 - r0) * (c1 - c0))  # an index past the region: see PrepareGraph
        sem = self.config.semantic
        sem_size = semantic_size(h, w, sem.max_side, sem.patch_size)
        grid = [n // sem.patch_size for n in sem_size]
        # What goes up: the semantic encoder reads the whole image, so a semantic model's regions
        # are windows of it on the device; otherwise only the region (a small hole in a large
        # photo costs what the hole costs).
        if self.config.use_semantic:
            reg.source, origin = self._image(), (r0, c0)
        else:
            reg.source, origin = be.upload(np.ascontiguousarray(self.image[None, r0:r1, c0:c1])), (0, 0)
        reg.plan = np.array([origin[0], r1 - r0, origin[1], c1 - c0, *grid], dtype=np.int64)
        reg.holes = be.upload(np.append(holes, sentinel))
        reg.prepared, reg.mask = be.run("prepare", reg.source, reg.holes, reg.plan)
        if self.config.fill != "zero":
            reg.prepared = be.run("fill", reg.prepared, reg.mask)
        self._regions[kind] = reg
        return reg

    def _air(self, reg: _Region, i: int, j: int):
        """Tile ``(i, j)``'s precompute (AppEncoder + AIR's first layer), cached."""
        key = (i, j)
        if key in reg.cache:
            reg.cache.move_to_end(key)
            return reg.cache[key]
        t = reg.tiles[i][j]
        rh, rw = reg.shape
        (ir0, ir1, ic0, ic1), (kr0, kr1, kc0, kc1) = t.inner, t.keep
        box = np.array([ir0, (ir1 - ir0) // 4, ic0, (ic1 - ic0) // 4, kr0, kr1 - kr0, kc0, kc1 - kc0,
                        rh, rw, self.height, self.width, reg.r0, reg.c0], dtype=np.int64)
        air = self.backend.run("tile", reg.prepared, reg.mask, self._semantic(reg), box)
        reg.cache[key] = air
        nbytes = self.backend.nbytes
        while len(reg.cache) > 1 and sum(nbytes(a) for a in reg.cache.values()) > self.cache_bytes:
            reg.cache.popitem(last=False)
        return air

    # ---- the result ------------------------------------------------------------------------
    def inpaint(self, scale: float = 1.0, dtype=np.uint8) -> np.ndarray:
        """The image with its holes filled, ``round(S*H) x round(S*W) x 3``.

        ``dtype=np.uint8`` (default): 8 bits, made on the device before the one download.
        ``np.float32``: in [0, 1] (parity tests and evaluation). At scale 1 only hole pixels are
        queried and known pixels come back exactly as given.
        """
        if not np.isfinite(scale) or scale < 1:
            raise InputError(f"--scale must be a number >= 1, got {scale}")
        out_h, out_w = output_shape((self.height, self.width), scale)
        if out_h * out_w > MAX_OUTPUT_PIXELS:
            raise InputError(f"output {out_w}x{out_h} is too large (over {MAX_OUTPUT_PIXELS // 10**6} "
                             f"megapixels); lower --scale")
        dtype = np.dtype(dtype)
        if dtype not in (np.uint8, np.float32):
            raise InputError(f"inpaint returns uint8 or float32, not {dtype}")
        start = time.perf_counter()
        busy0 = self.backend.counters.busy_s
        if self.flips > 1:
            out = self._inpaint_ensemble(out_h, out_w, dtype)
        else:
            out = self._inpaint_once(out_h, out_w, dtype)
        if self.reference or dtype == np.float32:
            out = out.astype(dtype) if dtype == np.float32 else to_uint8(out)
        c = self.backend.counters
        total = time.perf_counter() - start
        self.stats = {"backend": self.backend.name, "precision": getattr(self.backend, "precision", "fp32"),
                      "calls": c.calls, "h2d_bytes": c.h2d_bytes, "d2h_bytes": c.d2h_bytes,
                      "total_ms": 1e3 * total, "glue_ms": 1e3 * (total - (c.busy_s - busy0)),
                      "graphs": dict(c.per_graph)}
        return out

    def _inpaint_once(self, out_h: int, out_w: int, dtype: np.dtype) -> np.ndarray:
        """One pass over the image as it is (no mirrored views)."""
        if self.reference:
            return self._inpaint_reference(out_h, out_w)
        if (out_h, out_w) == (self.height, self.width):
            return self._inpaint_holes(dtype)
        return self._inpaint_scaled(out_h, out_w, dtype)

    def _inpaint_holes(self, dtype: np.dtype) -> np.ndarray:
        """Scale 1: query the hole pixels only, tile by tile, and put them into the image."""
        if not self.mask.any():
            return self.image.copy() if dtype == np.uint8 else self._given_float()
        be, reg = self.backend, self._region("holes")
        n = len(reg.host_holes)
        rgb = be.empty(n)
        rh, rw = reg.shape
        todo = [(i, j) for i, row in enumerate(reg.tiles) for j in range(len(row))]
        n_tc = len(reg.tiles[0])
        for i, j in tqdm(todo, desc="inpaint x1", disable=not self.progress, unit="tile"):
            s, e = (int(v) for v in reg.hole_starts[i * n_tc + j:i * n_tc + j + 2])
            if s == e:
                continue
            air = self._air(reg, i, j)
            t = reg.tiles[i][j]
            for a in range(s, e, self.chunk):
                b = min(a + self.chunk, e)
                span = np.array([a, b, rw, self.height, self.width, reg.r0, reg.c0,
                                 reg.r0 + t.keep[0], reg.c0 + t.keep[2]], dtype=np.int64)
                be.run_into("query_holes", rgb, a, b - a, air, reg.holes, span)
        if dtype == np.uint8:
            out = be.download(be.run("composite", reg.source, reg.holes, rgb, reg.plan))[0]
            if out.shape[:2] == (self.height, self.width):
                return out
            whole = self.image.copy()  # only the region comes back
            whole[reg.r0:reg.r1, reg.c0:reg.c1] = out
            return whole
        out = self._given_float()
        rows, cols = np.divmod(reg.host_holes, rw)
        out[rows + reg.r0, cols + reg.c0] = be.download(rgb)
        return out

    def _inpaint_scaled(self, out_h: int, out_w: int, dtype: np.dtype) -> np.ndarray:
        """Scale > 1: every output pixel, a rectangle per tile, laid out tile after tile."""
        be, reg = self.backend, self._region("full")
        h, w = self.height, self.width
        row_edges = output_edges(h, out_h, self.tile)
        col_edges = output_edges(w, out_w, self.tile)
        rgb = be.empty(out_h * out_w)
        rects = [r for r in tile_outputs(row_edges, col_edges) if r[2] < r[3] and r[4] < r[5]]
        for i, j, oy0, oy1, ox0, ox1, offset in tqdm(rects, desc="inpaint", disable=not self.progress,
                                                     unit="tile"):
            air = self._air(reg, i, j)
            t = reg.tiles[i][j]
            rows = max(1, self.chunk // (ox1 - ox0))
            for y in range(oy0, oy1, rows):
                y1 = min(y + rows, oy1)
                rect = np.array([y, y1, ox0, ox1, out_h, out_w, h, w, t.keep[0], t.keep[2]], dtype=np.int64)
                be.run_into("query", rgb, offset + (y - oy0) * (ox1 - ox0), (y1 - y) * (ox1 - ox0), air, rect)
        if dtype == np.uint8:
            edges = [be.upload(np.array(e, dtype=np.int64)) for e in (row_edges, col_edges)]
            out_size = np.array([out_h, out_w], dtype=np.int64)
            return be.download(be.run("assemble", rgb, out_size, *edges))[0]
        flat = be.download(rgb)
        out = np.empty((out_h, out_w, 3), dtype=np.float32)
        for _, _, oy0, oy1, ox0, ox1, offset in rects:
            n = (oy1 - oy0) * (ox1 - ox0)
            out[oy0:oy1, ox0:ox1] = flat[offset:offset + n].reshape(oy1 - oy0, ox1 - ox0, 3)
        return out

    def _view(self, axes: tuple[int, ...]) -> Inpainter:
        """This image mirrored along ``axes``, with its own device state; same backend."""
        if axes not in self._views:
            view = copy.copy(self)
            view.flips = 1
            view.given = np.flip(self.given, axes)
            view.image = np.ascontiguousarray(np.flip(self.image, axes))
            view.mask = np.ascontiguousarray(np.flip(self.mask, axes))
            view._forget_computed()
            self._views[axes] = view
        return self._views[axes]

    def _inpaint_ensemble(self, out_h: int, out_w: int, dtype: np.dtype) -> np.ndarray:
        """The mean of this image's result and its mirrored views' results, mirrored back."""
        f32 = np.dtype(np.float32)
        total = self._inpaint_once(out_h, out_w, f32)
        for axes in FLIPS[self.flips]:
            total += np.flip(self._view(axes)._inpaint_once(out_h, out_w, f32), axes)
        out = total / np.float32(self.flips)
        if (out_h, out_w) == (self.height, self.width):
            out[~self.mask] = self._given_float()[~self.mask]  # exactly as given, not a mean of equals
        return to_uint8(out) if dtype == np.uint8 else out

    def _given_float(self) -> np.ndarray:
        """The image as given, as float32 in [0, 1] (known pixels of a float result)."""
        if self.given.dtype == np.uint8:
            return self.given.astype(np.float32) / np.float32(255)
        return np.array(self.given, dtype=np.float32)

    # ---- the literal path of the paper ------------------------------------------------------
    def _inpaint_reference(self, out_h: int, out_w: int) -> np.ndarray:
        """Every output pixel through the literal model (whole image, no tiles), then the known
        pixels put back at scale 1."""
        h, w = self.height, self.width
        if h % 4 or w % 4:
            raise InputError("the reference path needs an image whose sides are multiples of 4")
        image = self.image.astype(np.float32) / np.float32(255)
        if self._ref_feats is None:
            sem = (None, None)
            if self.config.use_semantic:
                s = self.config.semantic
                si, sv = semantic_input(image, self.mask, s.max_side, s.patch_size)
                sem = (to_uint8(si)[None] / np.float32(255), to_uint8(sv)[None] / np.float32(255))
            self._ref_feats = self.backend.reference_features(
                image.transpose(2, 0, 1)[None].copy(), self.mask[None, None].astype(np.float32), *sem)
        coord = make_coord((out_h, out_w))
        cell = cell_for((out_h, out_w))[None]
        rgb = np.concatenate([self.backend.reference_query(self._ref_feats, coord[None, s:s + 4096], cell)[0]
                              for s in range(0, len(coord), 4096)])
        out = np.clip(rgb.reshape(out_h, out_w, 3), 0.0, 1.0)
        if (out_h, out_w) == (h, w):
            out[~self.mask] = self._given_float()[~self.mask]
        return out
