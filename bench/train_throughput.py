"""Training throughput of the paper's model (``sair-b16``) under the paper's recipe, one device.

Builds ``sair-b16`` at the paper's widths with random weights (``pretrained=None``: speed does
not depend on the weights; no download), and times the training step ``sair-train`` runs (the
same :class:`sair_train.trainer.TrainStep`: AppEncoder + CLIP ViT-B/16 + SIR + AIR, L1 on
uniformly sampled pixels plus SIR's semantic loss, Adam) on batches of the paper's recipe (batch
16, 256x256 whole images, scale 1) made by the training dataset from photos scikit-image ships
(synthetic images when none are found). Batches are made once before timing, so the numbers are
the device's, not the data loader's (``sair-train --workers`` keeps the loader off the critical
path). Every variant starts from the same weights and sees the same batches, so its losses show
whether bf16 autocast follows the float32 loss curve.

    python bench/train_throughput.py                      # GPU, defaults: ~1 minute
    python bench/train_throughput.py --device cpu --steps 2 --batch 2

Prints a Markdown table (images/s, ms/step, peak GPU memory, mean loss of the timed steps) and
one machine-readable last line ``train_ips_fp32=<x> train_ips_bf16=<x>``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch


def sample_images(folder: Path, count: int = 8) -> list[Path]:
    """Photos scikit-image ships (no download); synthetic PNGs in ``folder`` when there are none."""
    files: list[Path] = []
    try:
        import skimage.data

        root = Path(skimage.data.__file__).parent
        files = sorted(p for p in root.glob("*") if p.suffix.lower() in (".png", ".jpg")
                       and p.stat().st_size > 50_000)[:count]
    except ImportError:
        pass
    if files:
        return files
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        y, x = np.mgrid[0:320, 0:320] / 320
        img = np.stack([x, y, 0.5 + 0.4 * np.sin(9 * x * y + i)], -1)
        img = img + 0.1 * rng.random((320, 320, 3))
        path = folder / f"synthetic_{i}.png"
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(path)
        files.append(path)
    return files


def make_batches(files: list[Path], batch: int, size: int, pool: int, sem_max_side: int):
    """``pool`` batches of the paper's recipe from the training dataset itself."""
    from sair_deploy.model.config import get_recipe
    from sair_train.data import InpaintingDataset, SampleSpec

    r = get_recipe("paper")
    spec = SampleSpec(size=size, crop=r.crop, queries=r.queries, scale_max=r.scale_max,
                      scale_prob=r.scale_prob, hole_fraction=r.hole_fraction,
                      sem_max_side=sem_max_side, semantic_target=True)
    ds = InpaintingDataset(files, spec, seed=0, repeat=-(-batch * pool // len(files)))
    out = []
    for p in range(pool):
        items = [ds[p * batch + i] for i in range(batch)]
        b = torch.utils.data.default_collate(items)
        b.pop("skipped")
        out.append(b)
    return out


def run_variant(model, init_state, batches, device, steps: int, warmup: int, amp: bool,
                channels_last: bool) -> dict[str, float]:
    """Time ``steps`` training steps (after ``warmup``) from ``init_state``."""
    from sair_train.trainer import TrainArgs, TrainStep, set_trainable

    model.load_state_dict(init_state)
    model.to(device).train()
    model.app_encoder.to(memory_format=torch.channels_last if channels_last
                         else torch.contiguous_format)
    set_trainable(model, TrainArgs(), "joint")
    step_mod = TrainStep(model, sem_weight=1.0, stage="joint", sem_queries=1024)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4, betas=(0.9, 0.999))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    losses: list[float] = []
    t0 = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            if cuda:
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
        batch = {k: v.to(device, non_blocking=True) for k, v in batches[i % len(batches)].items()}
        if channels_last:
            for k in ("image", "mask"):
                batch[k] = batch[k].contiguous(memory_format=torch.channels_last)
        with autocast:
            out = step_mod(batch)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        if i >= warmup:
            losses.append(out["loss"].detach())
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    n = batches[0]["image"].shape[0]
    return {"ips": steps * n / seconds, "ms": 1000 * seconds / steps,
            "peak_gb": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan"),
            "loss": float(torch.stack(losses).float().mean()),
            "loss_last": float(losses[-1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=None,
                    help="untimed steps first [3 on a GPU, 0 on the CPU]")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--pool", type=int, default=4, help="distinct batches cycled through")
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                    help="also time bf16 + channels_last [on a GPU only]")
    args = ap.parse_args()
    if args.warmup is None:
        args.warmup = 0 if args.device == "cpu" else 3
    if args.channels_last is None:
        args.channels_last = args.device != "cpu"

    from sair_deploy.model.config import get_config
    from sair_deploy.model.sair import SAIR

    device = torch.device(args.device)
    torch.manual_seed(0)
    cfg = get_config("sair-b16")
    cfg = cfg.replace(semantic=dataclasses.replace(cfg.semantic, pretrained=None))
    model = SAIR(cfg)
    init_state = copy.deepcopy(model.state_dict())
    t = time.perf_counter()
    batches = make_batches(sample_images(Path("/tmp/sair_bench_images")), args.batch, args.size,
                           min(args.pool, max(1, args.steps + args.warmup)),
                           cfg.semantic.max_side)
    data_s = time.perf_counter() - t

    variants = [("float32", False, False), ("bf16 autocast", True, False)]
    if args.channels_last:
        variants.append(("bf16 autocast + channels_last", True, True))
    rows = {}
    for name, amp, cl in variants:
        rows[name] = run_variant(model, init_state, batches, device, args.steps, args.warmup,
                                 amp, cl)

    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({torch.get_num_threads()} threads)"
    print(f"\nsair-b16 training step on {dev_name}: batch {args.batch} at {args.size}x"
          f"{args.size}, paper recipe (scale 1, whole images, 2304 uniform queries, semantic "
          f"loss on 1024 SIR reads), Adam; {args.steps} timed steps after {args.warmup} warm-up; "
          f"torch {torch.__version__}; batches prepared in {data_s:.1f} s\n")
    print("| variant | images/s | ms/step | peak GPU memory (GiB) | mean loss (timed steps) |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        mem = "n/a" if np.isnan(r["peak_gb"]) else f"{r['peak_gb']:.2f}"
        print(f"| {name} | {r['ips']:.3g} | {r['ms']:.0f} | {mem} | {r['loss']:.4f} |")
    print(f"\ntrain_ips_fp32={rows['float32']['ips']:.4g} "
          f"train_ips_bf16={rows['bf16 autocast']['ips']:.4g}")


if __name__ == "__main__":
    main()
