"""Speed of the fast path against the literal formulation, on the CPU (a benchmark, not a test).

For 256, 512 and 1024 square photos with ~30% holes, at scale 1 and scale 2, prints a Markdown
table: reference ms, fast ms, output megapixels/s, speedup; encoder GFLOP per image and query
FLOPs per output pixel of each path (counted by torch's FlopCounterMode on the real graphs) and
the time floor they imply at this machine's measured matmul rate; peak resident memory; OpenCV
Telea at the same sizes. Every case runs in its own process so its peak memory is its own.

The literal path costs ~50 MFLOP per output pixel with the paper's widths, so it is timed on a
sample of queries and extrapolated to the whole output (the table says so).

    python bench/speed.py                    # paper widths (random weights; speed does not care)
    python bench/speed.py --config sair-small --sizes 256 512
    python bench/speed.py --memory 2048      # peak RSS of a 2048x2048 input at scale 2

The last line is machine-readable: ``speedup_512_s2=<x> speedup_512_s1=<x> floor_ratio_512_s2=<x>``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


def photo(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A real photo (scikit-image's astronaut) at ``size`` and a ~30% stroke-and-box mask."""
    from PIL import Image
    from skimage import data

    img = Image.fromarray(data.astronaut()).resize((size, size), Image.Resampling.LANCZOS)
    image = np.asarray(img, dtype=np.float32) / 255.0
    rng = np.random.default_rng(size)
    mask = np.zeros((size, size), bool)
    yy, xx = np.mgrid[0:size, 0:size]
    while mask.mean() < 0.30:
        if rng.random() < 0.5:  # a box
            h, w = (rng.integers(size // 10, size // 4, 2))
            y, x = rng.integers(0, size - h), rng.integers(0, size - w)
            mask[y:y + h, x:x + w] = True
        else:  # a thick stroke
            (y0, x0), (y1, x1) = rng.integers(0, size, (2, 2))
            r = rng.integers(size // 60 + 2, size // 25 + 3)
            t = np.clip(((yy - y0) * (y1 - y0) + (xx - x0) * (x1 - x0)) / max((y1 - y0) ** 2 + (x1 - x0) ** 2, 1), 0, 1)
            mask |= (yy - y0 - t * (y1 - y0)) ** 2 + (xx - x0 - t * (x1 - x0)) ** 2 <= r * r
    return image, mask


def matmul_gflops(torch) -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    t = time.perf_counter()
    n = 5
    for _ in range(n):
        a @ b
    return n * 2 * 2048**3 / (time.perf_counter() - t) / 1e9


def count_flops(torch, fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        fn()
    return float(fc.get_total_flops())


def run_case(args) -> dict:
    """One (size, scale) case, in this process; returns its measurements."""
    import torch

    from sair_deploy.backends.torch_backend import TorchBackend
    from sair_deploy.coords import cell_for, make_coord, output_shape
    from sair_deploy.inpainter import Inpainter
    from sair_deploy.model.config import get_config
    from sair_deploy.model.sair import SAIR

    torch.manual_seed(0)
    cfg = get_config(args.config)
    cfg = cfg.replace(semantic=type(cfg.semantic)(**{**cfg.semantic.__dict__, "pretrained": None}))
    model = SAIR(cfg).eval()
    backend = TorchBackend(model)
    image, mask = photo(args.size)
    h, w = mask.shape
    out_h, out_w = output_shape((h, w), args.scale)
    n_out = out_h * out_w
    res: dict = {"size": args.size, "scale": args.scale, "holes": float(mask.mean())}

    # fast path, end to end (features + queries), as sair-inpaint runs it
    fast = Inpainter(backend)
    t = time.perf_counter()
    fast.set_image(image, mask)
    result = fast.inpaint(args.scale)
    res["fast_ms"] = (time.perf_counter() - t) * 1e3
    assert result.shape == (out_h, out_w, 3)
    res["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.memory_only:
        return res

    # FLOPs of each graph, counted on the real modules
    g = backend.graphs
    sem_in = fast._sem_inputs
    timg = torch.from_numpy(image.transpose(2, 0, 1)[None].copy())
    tmask = torch.from_numpy(mask[None, None].astype(np.float32))
    enc = count_flops(torch, lambda: g["appearance"](timg, tmask))
    if cfg.use_semantic:
        enc += count_flops(torch, lambda: g["semantic"](*[torch.from_numpy(a) for a in sem_in]))
    res["encoder_gflop"] = enc / 1e9
    blk = 64
    app = torch.zeros(1, cfg.app.out_channels, blk + 2, blk + 2)
    sem_pre = fast.sem_pre  # the torch backend keeps it as a tensor
    centres = torch.from_numpy(make_coord((h, w), (0, blk), (0, blk)))[None]
    pc = torch.from_numpy(fast.pixel_cell)
    pre_args = (app, sem_pre, centres, pc) if cfg.use_semantic else (app,)
    pre_per_px = count_flops(torch, lambda: g["precompute"](*pre_args)) / blk**2
    pre = g["precompute"](*pre_args).detach()
    q = 4096
    coord = torch.rand(1, q, 2) * (2 * (blk - 2) / h) - 1  # neighbours stay inside the block
    grid = torch.tensor([h, w, 0, 0], dtype=torch.float32)
    cell = torch.from_numpy(cell_for((out_h, out_w)))[None]
    query_per_q = count_flops(torch, lambda: g["query"](pre, grid, coord, cell)) / q
    feats = backend.reference_features(timg, tmask, *(sem_in or (None, None)))
    ref_coord = torch.rand(1, args.ref_queries, 2) * 2 - 1
    ref_per_q = count_flops(torch, lambda: model.query(feats, ref_coord, cell)) / args.ref_queries

    # which work the fast path did: queries and precomputed pixels
    if args.scale == 1:
        n_q = int(mask.sum())
        touched = {r for r, *_ in fast._plan_queries(out_h, out_w, True)}
        n_pre = sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in touched)
    else:
        n_q, n_pre = n_out, sum((r1 - r0) * (c1 - c0) for r, *_ in [(None,)] for r0, r1, c0, c1 in
                                {r for r, *_ in fast._plan_queries(out_h, out_w, False)})
    res["fast_query_flop_px"] = (n_q * query_per_q + n_pre * pre_per_px) / n_out
    res["ref_query_flop_px"] = ref_per_q  # the literal path queries every output pixel

    # literal path: encoder once + a timed sample of queries, extrapolated to every output pixel
    t = time.perf_counter()
    feats = backend.reference_features(timg, tmask, *(sem_in or (None, None)))
    enc_ms = (time.perf_counter() - t) * 1e3
    with torch.inference_mode():
        model.query(feats, ref_coord[:, :64], cell)
        t = time.perf_counter()
        model.query(feats, ref_coord, cell)
        per_q_ms = (time.perf_counter() - t) * 1e3 / args.ref_queries
    res["ref_ms"] = enc_ms + per_q_ms * n_out

    # OpenCV Telea, the classical peer (plus a bicubic resize at scale > 1)
    import cv2

    u8 = (image * 255).astype(np.uint8)
    m8 = mask.astype(np.uint8) * 255
    t = time.perf_counter()
    tel = cv2.inpaint(u8, m8, 3, cv2.INPAINT_TELEA)
    if args.scale != 1:
        tel = cv2.resize(tel, (out_w, out_h), interpolation=cv2.INTER_CUBIC)
    res["telea_ms"] = (time.perf_counter() - t) * 1e3
    res["gflops"] = matmul_gflops(torch)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="sair-b16")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0])
    ap.add_argument("--ref-queries", type=int, default=256)
    ap.add_argument("--memory", type=int, help="only measure peak RSS at this size, scale 2")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        a = argparse.Namespace(**json.loads(args.case))
        print(json.dumps(run_case(a)))
        return

    def spawn(size: int, scale: float, memory_only: bool = False) -> dict:
        case = json.dumps({"config": args.config, "size": size, "scale": scale,
                           "ref_queries": args.ref_queries, "memory_only": memory_only})
        out = subprocess.run([sys.executable, __file__, "--case", case], check=True,
                             capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        return json.loads(out.stdout.strip().splitlines()[-1])

    if args.memory:
        r = spawn(args.memory, 2.0, memory_only=True)
        print(f"{args.config}: {args.memory}x{args.memory} at scale 2 -> {2 * args.memory}x{2 * args.memory}: "
              f"{r['fast_ms'] / 1e3:.1f} s, peak RSS {r['rss_mb']:.0f} MB")
        return

    rows = [spawn(s, sc) for s in args.sizes for sc in args.scales]
    print(f"config {args.config}, {os.cpu_count()} CPU threads, float32; matmul rate "
          f"{np.median([r['gflops'] for r in rows]):.0f} GFLOP/s (2048^3, measured in each case)\n")
    print("| input | scale | holes | reference ms* | fast ms | fast MP/s | speedup | encoder GFLOP | "
          "query FLOP/px ref | query FLOP/px fast | FLOP ratio | fast floor ms | fast/floor | peak RSS MB | Telea ms |")
    print("|---" * 15 + "|")
    summary = {}
    for r in rows:
        out_px = (round(r["size"] * r["scale"])) ** 2
        floor_ms = (r["encoder_gflop"] * 1e9 + r["fast_query_flop_px"] * out_px) / (r["gflops"] * 1e9) * 1e3
        speed = r["ref_ms"] / r["fast_ms"]
        ratio = r["fast_ms"] / floor_ms
        print(f"| {r['size']}² | {r['scale']:g} | {r['holes']:.0%} | {r['ref_ms']:.0f} | {r['fast_ms']:.0f} | "
              f"{out_px / r['fast_ms'] / 1e3:.2f} | {speed:.1f}x | {r['encoder_gflop']:.1f} | "
              f"{r['ref_query_flop_px'] / 1e6:.1f} M | {r['fast_query_flop_px'] / 1e6:.2f} M | "
              f"{r['ref_query_flop_px'] / r['fast_query_flop_px']:.1f}x | {floor_ms:.0f} | {ratio:.1f}x | "
              f"{r['rss_mb']:.0f} | {r['telea_ms']:.0f} |")
        summary[(r["size"], r["scale"])] = (speed, ratio)
    print("\n*reference: encoder timed, queries timed on a sample and extrapolated to every output pixel "
          "(the literal formulation queries all of them).")
    key = lambda s, sc: summary.get((s, sc), (float("nan"), float("nan")))  # noqa: E731
    print(f"speedup_512_s2={key(512, 2.0)[0]:.2f} speedup_512_s1={key(512, 1.0)[0]:.2f} "
          f"floor_ratio_512_s2={key(512, 2.0)[1]:.2f}")


if __name__ == "__main__":
    main()
