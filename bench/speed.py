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

With ``--precisions`` it compares inference precisions instead (fast path only, both scales):

    python bench/speed.py --sizes 512 --precisions fp32 bf16 int8 --threads 2

Every (backend, precision) variant -- torch fp32/bf16, ONNX Runtime fp32/int8 (an export of the
same random model, int8 calibrated on the shipped training photos) -- runs interleaved (each
repeat runs every variant once), so load from other processes hits all alike; the table gives
the median and the spread (max/min) over the repeats. Each turn is a process of its own that
makes its backend, warms it up with one untimed image at the largest scale and times one image
per scale: in one process, ONNX Runtime's arenas (GBs with the paper widths) and threads slowed
the torch turns after them (bf16 1.52x float32 at scale 2 there, 2.07x alone). Its last line:
``fp32_s1_ms=.. bf16_s1_ms=.. int8_s1_ms=.. fp32_s2_ms=.. bf16_s2_ms=.. int8_s2_ms=..
gate_bf16=pass|fail gate_int8=pass|fail`` (the best backend per precision; the gates of the
bundled model, as recorded in its checkpoint and export, else measured on ``--gate-images``).
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


def random_config(name: str):
    """Config ``name`` with its CLIP tower randomly initialised: speed does not depend on the
    weights, and no pretrained weights can be had here."""
    from sair_deploy.model.config import get_config

    cfg = get_config(name)
    return cfg.replace(semantic=type(cfg.semantic)(**{**cfg.semantic.__dict__, "pretrained": None}))


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
    from sair_deploy.coords import cell_for, output_shape
    from sair_deploy.inpainter import Inpainter
    from sair_deploy.preprocess import semantic_input, semantic_size
    from sair_deploy.model.sair import SAIR

    torch.manual_seed(0)
    cfg = random_config(args.config)
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
    from sair_deploy.tiling import padded

    g = backend.graphs
    u8 = np.round(image * 255).astype(np.uint8)
    holes = torch.from_numpy(np.append(np.flatnonzero(mask), h * w).astype(np.int32))
    s = cfg.semantic
    region = torch.tensor([0, h, 0, w, *(n // s.patch_size for n in semantic_size(h, w, s.max_side, s.patch_size))])
    with torch.inference_mode():
        prepared, pmask = g["prepare"](torch.from_numpy(u8[None]), holes, region)
        if cfg.fill != "zero":
            prepared = g["fill"](prepared, pmask)
    sem_pre = fast._semantic()  # computed once for the image above
    hp, wp = padded(h), padded(w)
    whole = torch.tensor([0, hp // 4, 0, wp // 4, 0, h, 0, w, h, w, h, w, 0, 0])
    tile_args = (prepared, pmask, sem_pre, whole) if cfg.use_semantic else (prepared, pmask, whole)
    tile_flop = count_flops(torch, lambda: g["tile"](*tile_args))
    app_flop = count_flops(torch, lambda: model.encode_appearance(prepared, pmask))
    enc = app_flop
    if cfg.use_semantic:
        sem_img, sem_valid = semantic_input(image, mask, s.max_side, s.patch_size)
        sem_img = torch.from_numpy(np.round(sem_img * 255).astype(np.uint8)[None])
        sem_valid = torch.from_numpy(np.round(sem_valid * 255).astype(np.uint8)[None])
        enc += count_flops(torch, lambda: g["semantic"](torch.from_numpy(u8[None]), holes, region))
    res["encoder_gflop"] = enc / 1e9
    pre_per_px = (tile_flop - app_flop) / (h * w)
    blk = 64  # a 64x64 kept window; its queries' neighbours stay inside it
    box = torch.tensor([0, hp // 4, 0, wp // 4, 0, blk, 0, blk, h, w, h, w, 0, 0])
    pre = g["tile"](*tile_args[:-1], box).detach()
    oy1 = int((blk - 4) * out_h / h)
    rect = torch.tensor([0, oy1, 0, min(out_w, 4096 // max(oy1, 1) or 1), out_h, out_w, h, w, 0, 0])
    n_rect = oy1 * int(rect[3])
    query_per_q = count_flops(torch, lambda: g["query"](pre, rect)) / n_rect
    cell = torch.from_numpy(cell_for((out_h, out_w)))[None]
    timg = torch.from_numpy(u8.transpose(2, 0, 1)[None] / np.float32(255))
    tmask = torch.from_numpy(mask[None, None].astype(np.float32))
    sem_in = (sem_img.float() / 255, sem_valid.float() / 255) if cfg.use_semantic else (None, None)
    feats = model.encode(timg, tmask, *sem_in)
    ref_coord = torch.rand(1, args.ref_queries, 2) * 2 - 1
    ref_per_q = count_flops(torch, lambda: model.query(feats, ref_coord, cell)) / args.ref_queries

    # which work the fast path did: queries and precomputed pixels (the tiles' kept windows)
    kind = "holes" if args.scale == 1 else "full"
    reg = fast._regions[kind]
    n_pre = sum((t.keep[1] - t.keep[0]) * (t.keep[3] - t.keep[2])
                for i, row in enumerate(reg.tiles) for j, t in enumerate(row) if (i, j) in reg.cache)
    n_q = int(mask.sum()) if args.scale == 1 else n_out
    res["fast_query_flop_px"] = (n_q * query_per_q + n_pre * pre_per_px) / n_out
    res["ref_query_flop_px"] = ref_per_q  # the literal path queries every output pixel

    # literal path: encoder once + a timed sample of queries, extrapolated to every output pixel
    t = time.perf_counter()
    feats = model.encode(timg, tmask, *sem_in)
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


def bundled_gates(gate_images: str | None) -> dict[str, str]:
    """pass/fail of the bundled model's bf16 and int8 gates: recorded ones, else measured."""
    import shutil
    import tempfile
    from pathlib import Path

    from sair_deploy.api import DEFAULT_CHECKPOINT, DEFAULT_EXPORT
    from sair_deploy.backends.onnx_backend import OnnxBackend
    from sair_deploy.backends.torch_backend import TorchBackend
    from sair_deploy.manifest import load_manifest
    from sair_deploy.model.checkpoint import load_checkpoint
    from sair_deploy.model.config import SAIRConfig
    from sair_deploy.precision import checkpoint_gates
    from sair_export import gate as gt
    from sair_export.quantize import write_int8_graphs

    recorded = {**checkpoint_gates(DEFAULT_CHECKPOINT),
                **(load_manifest(DEFAULT_EXPORT).get("precision_gate") or {})}
    out = {}
    images = None
    for p in ("bf16", "int8"):
        if p in recorded:
            out[p] = "pass" if recorded[p]["passed"] else "fail"
            continue
        if images is None:
            images, source = gt.gate_images(gate_images)
        if p == "bf16":
            model = load_checkpoint(DEFAULT_CHECKPOINT)
            rec = gt.run_gate(p, TorchBackend(model), TorchBackend(model, precision="bf16"), images, source)
        else:
            tmp = Path(tempfile.mkdtemp(prefix="sair-gate-"))
            shutil.copytree(DEFAULT_EXPORT, tmp / "e")
            m = load_manifest(tmp / "e")
            files = write_int8_graphs(tmp / "e", m["graphs"], SAIRConfig.from_dict(m["config"]),
                                      log=lambda s: None)
            from sair_deploy import manifest as mf
            for name, f in files.items():
                m["graphs"][name]["files"]["int8"] = f
            mf.write_manifest(tmp / "e", m)
            rec = gt.run_gate(p, OnnxBackend(tmp / "e", device="cpu", precision="fp32"),
                              OnnxBackend(tmp / "e", device="cpu", precision="int8"), images, source)
        print(gt.gate_line(p, rec), flush=True)
        out[p] = "pass" if rec["passed"] else "fail"
    return out


def precision_turn(turn: dict) -> dict:
    """One turn of the precision table, in a process of its own: the backend made from the saved
    model (or its export), one untimed image at the largest scale, then one timed image per scale."""
    import torch

    from sair_deploy.backends.onnx_backend import OnnxBackend
    from sair_deploy.backends.torch_backend import TorchBackend
    from sair_deploy.inpainter import Inpainter
    from sair_deploy.model.checkpoint import load_checkpoint

    torch.set_num_threads(turn["threads"])
    if turn["backend"] == "torch":
        backend = TorchBackend(load_checkpoint(turn["checkpoint"]), precision=turn["precision"])
    else:
        from sair_deploy.backends import onnx_backend

        onnx_backend.SHARE_CPU_THREADS = True  # as sair-inpaint's process does
        backend = OnnxBackend(turn["export"], device="cpu", precision=turn["precision"], threads=turn["threads"])
    image, mask = photo(turn["size"])
    warm = Inpainter(backend)  # untimed: first calls size the arenas and caches
    warm.set_image(image, mask)
    warm.inpaint(max(turn["scales"]))
    del warm
    times = {}
    for scale in turn["scales"]:
        inp = Inpainter(backend)
        t = time.perf_counter()
        inp.set_image(image, mask)
        inp.inpaint(scale)
        times[str(scale)] = (time.perf_counter() - t) * 1e3
    return times


def precision_table(args) -> None:
    """Fast-path time per (backend, precision) at each size and scale, interleaved in one run."""
    import tempfile
    from pathlib import Path

    import torch

    from sair_deploy.model.checkpoint import save_checkpoint
    from sair_deploy.model.sair import SAIR
    from sair_deploy.precision import cpu_supports_bf16
    from sair_export.pipeline import export_checkpoint

    torch.manual_seed(0)
    cfg = random_config(args.config)
    model = SAIR(cfg).eval()
    tmp = Path(tempfile.mkdtemp(prefix="sair-bench-"))
    save_checkpoint(model, tmp / "model.safetensors")
    variants = []
    if "fp32" in args.precisions:
        variants.append(("torch", "fp32"))
    if "bf16" in args.precisions and cpu_supports_bf16():
        variants.append(("torch", "bf16"))
    if {"fp32", "int8"} & set(args.precisions) and not args.no_onnx:
        export_checkpoint(tmp / "model.safetensors", tmp / "export", log=lambda s: None)
        if "int8" in args.precisions:
            from sair_deploy import manifest as mf
            from sair_deploy.manifest import load_manifest
            from sair_export.quantize import write_int8_graphs

            m = load_manifest(tmp / "export")
            for name, f in write_int8_graphs(tmp / "export", m["graphs"], cfg, log=lambda s: None).items():
                m["graphs"][name]["files"]["int8"] = f
            mf.write_manifest(tmp / "export", m)
        variants += [("onnx", p) for p in ("fp32", "int8") if p in args.precisions]
    del model
    times: dict = {}
    for size in args.sizes:
        for rep in range(args.repeat):
            for be, p in (variants if rep % 2 == 0 else variants[::-1]):
                # a process per turn: ONNX Runtime's arenas (GBs for a paper-width tile graph) and
                # threads measurably slowed the torch turns that followed them in one process
                turn = json.dumps({"backend": be, "precision": p, "size": size, "scales": args.scales,
                                   "threads": args.threads, "checkpoint": str(tmp / "model.safetensors"),
                                   "export": str(tmp / "export")})
                out = subprocess.run([sys.executable, __file__, "--turn", turn], check=True,
                                     capture_output=True, text=True,
                                     env={**os.environ, "PYTHONWARNINGS": "ignore"})
                for scale, ms in json.loads(out.stdout.strip().splitlines()[-1]).items():
                    times.setdefault((size, float(scale), be, p), []).append(ms)
    gates = bundled_gates(args.gate_images)
    print(f"\nconfig {args.config} (random weights), {args.threads} threads, ~30% holes; median of "
          f"{args.repeat} interleaved runs (spread = max/min)\n")
    print("| input | scale | backend | precision | ms | spread | vs fp32 (same backend) | vs torch fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    best: dict = {}
    for (size, scale, be, p), ts in sorted(times.items()):
        med = float(np.median(ts))
        base = np.median(times.get((size, scale, be, "fp32"), [np.nan]))
        tfp = np.median(times.get((size, scale, "torch", "fp32"), [np.nan]))
        print(f"| {size}² | {scale:g} | {be} | {p} | {med:.0f} | {max(ts) / min(ts):.2f} | "
              f"{base / med:.2f}x | {tfp / med:.2f}x |")
        if size == args.sizes[0]:
            key = (p, scale)
            best[key] = min(best.get(key, np.inf), med)
    s = lambda p, sc: f"{best.get((p, sc), float('nan')):.0f}"  # noqa: E731
    print(" ".join(f"{p}_s{sc:g}_ms={s(p, sc)}" for sc in (1.0, 2.0) for p in ("fp32", "bf16", "int8"))
          + f" gate_bf16={gates.get('bf16', 'fail')} gate_int8={gates.get('int8', 'fail')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="sair-b16")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0])
    ap.add_argument("--ref-queries", type=int, default=256)
    ap.add_argument("--memory", type=int, help="only measure peak RSS at this size, scale 2")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--turn", help=argparse.SUPPRESS)
    ap.add_argument("--precisions", nargs="+", choices=["fp32", "bf16", "int8"],
                    help="compare these precisions (fast path, interleaved) instead")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved repeats (--precisions)")
    ap.add_argument("--no-onnx", action="store_true", help="torch variants only (--precisions)")
    ap.add_argument("--gate-images", help="held-out photos for gates not recorded in the bundle")
    args = ap.parse_args()
    if args.turn:
        print(json.dumps(precision_turn(json.loads(args.turn))))
        return
    if args.precisions:
        precision_table(args)
        return
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
