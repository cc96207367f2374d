"""Assemble a small training set and a held-out evaluation set from images that packages ship.

No downloads: the script only reads photos already on the machine.

* train: scikit-image's sample photos (``skimage/data``), plus Debian's wallpaper packages
  (``/usr/share/wallpapers``, ``/usr/share/backgrounds``) when they are installed; written at
  most ``--max-side`` pixels on the longer side.
* eval (held out, a *different source*): scikit-learn's and matplotlib's sample photos, found in
  the interpreter's site-packages or in any ``--site DIR`` (a folder holding an unpacked
  ``sklearn/`` or ``matplotlib/`` package, e.g. from ``pip download`` + unzip), cut into
  ``--eval-size`` squares at several positions and scales.

Usage: ``python scripts/make_sample_data.py [--out data/sample] [--site DIR ...]``.
"""

from __future__ import annotations

import glob
import json
import site
import sys
from pathlib import Path

import click
import numpy as np
from PIL import Image

# scikit-image photos worth learning from (drawings, charts and binary images left out).
SKIMAGE_PHOTOS = [
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "coffee.png",
    "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png",
    "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg",
]
HELD_OUT = {  # source -> paths inside site-packages
    "sklearn": ["sklearn/datasets/images/china.jpg", "sklearn/datasets/images/flower.jpg"],
    "matplotlib": ["matplotlib/mpl-data/sample_data/grace_hopper.jpg"],
}
WALLPAPER_GLOBS = ["/usr/share/wallpapers/*/contents/images/*.jpg",
                   "/usr/share/wallpapers/*/contents/images/*.png",
                   "/usr/share/backgrounds/**/*.jpg", "/usr/share/backgrounds/**/*.png"]


def _site_dirs(extra: tuple[str, ...]) -> list[Path]:
    dirs = [Path(d) for d in extra] + [Path(p) for p in sys.path if p]
    dirs += [Path(p) for p in site.getsitepackages()]
    return [d for d in dirs if d.is_dir()]


def _rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def _limit(im: Image.Image, max_side: int) -> Image.Image:
    s = max_side / max(im.size)
    if s >= 1:
        return im
    return im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.LANCZOS)


def _eval_crops(im: Image.Image, size: int, per_scale: int) -> list[Image.Image]:
    """Square crops: the centre at the shorter side, then a row of windows at two scales."""
    crops = []
    for frac in (1.0, 0.7, 0.5):
        side = int(min(im.size) * frac)
        if side < size // 2:
            continue
        n = 1 if frac == 1.0 else per_scale
        xs = np.linspace(0, im.width - side, n + 2)[1:-1] if n > 1 else [(im.width - side) / 2]
        ys = np.linspace(0, im.height - side, n + 2)[1:-1] if n > 1 else [(im.height - side) / 2]
        for i, x in enumerate(xs):
            y = ys[i % len(ys)]
            box = (int(x), int(y), int(x) + side, int(y) + side)
            crops.append(im.crop(box).resize((size, size), Image.Resampling.LANCZOS))
    return crops


@click.command()
@click.option("--out", default="data/sample", show_default=True, type=click.Path())
@click.option("--site", "sites", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Extra folder holding unpacked packages (sklearn/, matplotlib/).")
@click.option("--max-side", default=512, show_default=True)
@click.option("--eval-size", default=256, show_default=True)
@click.option("--eval-per-scale", default=3, show_default=True)
def main(out: str, sites: tuple[str, ...], max_side: int, eval_size: int,
         eval_per_scale: int) -> None:
    """Write OUT/train/<source>/*.png and OUT/eval/<source>/*.png and a manifest."""
    out_dir = Path(out)
    manifest: dict[str, list[str]] = {"train": [], "eval": []}

    import skimage.data

    sk_dir = Path(skimage.data.__file__).parent
    for name in SKIMAGE_PHOTOS:
        path = sk_dir / name
        if path.is_file():
            dst = out_dir / "train" / "skimage" / (path.stem + ".png")
            dst.parent.mkdir(parents=True, exist_ok=True)
            _limit(_rgb(path), max_side).save(dst)
            manifest["train"].append(str(dst))
    for pattern in WALLPAPER_GLOBS:
        for p in sorted(glob.glob(pattern, recursive=True)):
            path = Path(p)
            dst = out_dir / "train" / "wallpapers" / (path.parent.name + "_" + path.stem + ".png")
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                _limit(_rgb(path), max_side).save(dst)
            except OSError:
                continue
            manifest["train"].append(str(dst))

    dirs = _site_dirs(sites)
    for source, rels in HELD_OUT.items():
        for rel in rels:
            path = next((d / rel for d in dirs if (d / rel).is_file()), None)
            if path is None:
                click.echo(f"held-out photo {rel} not found (install {source} or pass --site)")
                continue
            for i, crop in enumerate(_eval_crops(_rgb(path), eval_size, eval_per_scale)):
                dst = out_dir / "eval" / source / f"{Path(rel).stem}_{i:02d}.png"
                dst.parent.mkdir(parents=True, exist_ok=True)
                crop.save(dst)
                manifest["eval"].append(str(dst))

    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    click.echo(f"{len(manifest['train'])} training images, {len(manifest['eval'])} held-out "
               f"evaluation crops under {out_dir}")
    if not manifest["eval"]:
        click.echo("warning: no held-out source found; evaluate on a folder of your own photos")


if __name__ == "__main__":
    main()
