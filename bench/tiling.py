"""How far tiled feature extraction is from running the AppEncoder on the whole image.

On a real photo (scikit-image's astronaut, 1024x1024, ~30% holes) compares sair-inpaint's
default tiles (512-pixel cores, overlap = the encoder's receptive radius) and smaller overlaps
against one whole-image pass; prints mean and max absolute difference inside the holes (0-1 scale).

    python bench/tiling.py                       # the bundled demo model
    python bench/tiling.py --model ckpt.safetensors --size 1024
    python bench/tiling.py --config sair-b16     # random weights at the paper's widths
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from speed import photo, random_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="checkpoint (default: the bundled demo model)")
    ap.add_argument("--config", help="use a random model of this config instead")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args()

    import torch

    from sair_deploy.backends.torch_backend import TorchBackend
    from sair_deploy.inpainter import Inpainter

    if args.config:
        from sair_deploy.model.sair import SAIR

        torch.manual_seed(0)
        cfg = random_config(args.config)
        backend, name = TorchBackend(SAIR(cfg).eval()), f"random {args.config}"
    else:
        from sair_deploy.api import DEFAULT_CHECKPOINT

        path = args.model or DEFAULT_CHECKPOINT
        backend, name = TorchBackend.from_checkpoint(path), str(path)
    image, mask = photo(args.size)
    radius = backend.config.app.receptive_radius()

    def run(tile: int, overlap: int | None) -> tuple[np.ndarray, float]:
        inp = Inpainter(backend, tile=tile, overlap=overlap)
        t = time.perf_counter()
        inp.set_image(image, mask)
        out = inp.inpaint(args.scale, dtype=np.float32)
        return out, time.perf_counter() - t

    whole, t_whole = run(args.size + 4, 8)  # one tile: its overlap is never used
    print(f"model {name}; {args.size}x{args.size} photo, {mask.mean():.0%} holes, scale {args.scale:g}; "
          f"receptive radius {radius} px\n")
    print("| tiles | overlap | mean abs diff in holes | max abs diff in holes | seconds |")
    print("|---|---|---|---|---|")
    print(f"| whole image | - | 0 | 0 | {t_whole:.1f} |")
    holes = mask if args.scale == 1 else np.ones(whole.shape[:2], bool)
    for tile, overlap in ((512, None), (256, None), (512, radius // 8 * 4), (512, 16)):
        out, t = run(tile, overlap)
        d = np.abs(out - whole)[holes]
        label = f"{overlap} (radius)" if overlap is None or overlap == radius else str(overlap)
        if overlap is None:
            label = f"{radius + (-radius) % 4} (default)"
        print(f"| {tile} | {label} | {d.mean():.2e} | {d.max():.2e} | {t:.1f} |")


if __name__ == "__main__":
    main()
