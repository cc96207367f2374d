"""The classical fills on their own, against scikit-image's exact biharmonic inpainting.

Each fill (no network) inpaints scikit-image's sample photos, the TRAINING photos of
``scripts/make_sample_data.py`` (never the held-out scikit-learn / matplotlib / wallpaper
photos: fills are chosen here, so they must not be chosen on the evaluation set). Protocol of
``sair-eval``: 256x256 centre squares, the deterministic masks of each hole-ratio bucket,
composited uint8 outputs, scikit-image PSNR and SSIM (7x7). Prints PSNR / SSIM per bucket and
the time per image.

    python bench/fills.py                    # mask seed 0
    python bench/fills.py --seeds 0 1 2      # more masks per photo and bucket
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

# scikit-image's photos that make_sample_data.py puts in the training set
SKIMAGE_PHOTOS = [
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "coffee.png",
    "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png",
    "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg",
]


def training_photos() -> list[Path]:
    """Paths of the scikit-image sample photos that are installed."""
    import skimage.data

    root = Path(skimage.data.__file__).parent
    return [root / n for n in SKIMAGE_PHOTOS if (root / n).is_file()]


def fill_method(kind: str):
    """An ``(image (H,W,3) float32, mask (H,W) bool) -> (H,W,3)`` inpainter from ``fill_holes``."""
    import torch

    from sair_deploy.model.fill import fill_holes

    def run(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]
        m = torch.from_numpy(mask.astype(np.float32))[None, None]
        with torch.no_grad():
            return fill_holes(kind, x, m)[0].permute(1, 2, 0).numpy()

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="mask seeds (one table each, "
                    "then their mean)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--no-skimage", action="store_true", help="skip scikit-image's (slow) solver")
    args = ap.parse_args()

    import torch

    from sair_train.evaluate import _biharmonic, evaluate

    torch.set_num_threads(2)
    methods = {f"fill={k}": fill_method(k) for k in ("pushpull", "onion", "biharmonic")}
    if not args.no_skimage:
        methods["scikit-image inpaint_biharmonic"] = _biharmonic
    files = training_photos()
    reports = [evaluate(methods, files, size=args.size, seed=s, progress=False) for s in args.seeds]
    buckets = reports[0]["buckets"]
    print(f"{len(files)} scikit-image training photos x {len(args.seeds)} mask seed(s) "
          f"{args.seeds}, {args.size}x{args.size}, composited uint8")
    print(f"| fill | {' | '.join(f'{b} PSNR / SSIM' for b in buckets)} | s / image |")
    print("|---|" + "---|" * (len(buckets) + 1))
    for name in methods:
        cells = []
        for b in buckets:
            psnr = np.mean([r["results"][name][b]["psnr"] for r in reports])
            ssim = np.mean([r["results"][name][b]["ssim"] for r in reports])
            cells.append(f"{psnr:.2f} / {ssim:.4f}")
        sec = np.mean([r["seconds_per_image"][name] for r in reports])
        print(f"| {name} | {' | '.join(cells)} | {sec:.3f} |")


if __name__ == "__main__":
    main()
