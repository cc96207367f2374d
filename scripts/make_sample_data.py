"""Write the training set and the fixed held-out set from photos that installed packages ship.

No downloads. Every source is named below, each either TRAIN or HELD OUT, never both, and never
a glob over whatever happens to be installed:

* TRAIN (written to ``OUT/train/<source>/``, resized to at most ``--max-side`` pixels, JPEG
  quality ``--quality`` so the folder is small enough to travel with the repository):
  scikit-image's sample photos; Debian's ``plasma-workspace-wallpapers`` (photos and renders),
  ``ukui-wallpapers``, ``gnome-backgrounds`` and ``sway-backgrounds`` (renders and patterns);
  scikit-learn's and matplotlib's sample photos when those packages are found (``--site DIR``
  for an unpacked wheel). The latter two were the previous held-out set, used to pick the
  previous bundled model, so they may only be trained on now.
* HELD OUT (written to ``OUT/heldout/<source>/`` as lossless PNG ``256x256`` crops, three per
  photo, plus the masks ``OUT/heldout_masks/<bucket>/NNN.png``): the photos of Debian's
  ``lomiri-wallpapers`` (its Ubuntu 16.04 photo collection, installed by its dependency
  ``lomiri-wallpapers-16.04``) and ``lomiri-wallpapers-20.04``. Their renders and vector art are
  left out (and are not trained on either). Every original file, crop and mask is pinned by
  sha256 in ``scripts/heldout.json``; the script refuses to write a held-out set that differs.

Install the Debian packages first::

    apt-get install -y plasma-workspace-wallpapers ukui-wallpapers gnome-backgrounds \\
        sway-backgrounds lomiri-wallpapers lomiri-wallpapers-20.04

Usage: ``python scripts/make_sample_data.py [--out data/sample] [--site DIR ...]``.
"""

from __future__ import annotations

import hashlib
import io
import json
import site
import sys
from pathlib import Path

import click
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "scripts" / "heldout.json"

CROP = 256  # held-out crop side (sair-eval's size); SR mode uses its centre 252 (divisible by 2, 3, 4)
CROP_SHORT_SIDE = 512  # held-out photos are resized to this short side before cropping
MASK_SEED = 0  # sair-eval's default --seed: the masks it draws are the ones saved here

# ---- TRAIN sources ----------------------------------------------------------------------------
SKIMAGE_PHOTOS = [  # photos worth learning from (drawings, charts and binary images left out)
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "coffee.png",
    "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png",
    "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg",
]
PLASMA = "/usr/share/wallpapers/{}/contents/images"  # the largest file of each is used
PLASMA_WALLPAPERS = [
    "Altai", "Autumn", "BytheWater", "Canopee", "Cascade", "Cluster", "ColdRipple",
    "ColorfulCups", "DarkestHour", "Elarun", "EveningGlow", "FallenLeaf", "Flow", "FlyingKonqui",
    "Grey", "Honeywave", "IceCold", "Kay", "Kite", "Kokkini", "MilkyWay", "OneStandsOut", "Opal",
    "PastelHills", "Patak", "Path", "SafeLanding", "Shell", "Volna", "summer_1am",
]
DEBIAN_TRAIN = {  # package -> files
    "ukui-wallpapers": [f"/usr/share/backgrounds/{n}" for n in (
        "2004default.jpg", "calla.png", "city.png", "desert.png", "firstgeneration.jpg",
        "fluent-color.png", "focal-ubuntukylin.png", "goldfish.png", "rhythm.jpg", "rollpaper.png",
        "string.jpg", "the-mouse.jpg")],
    "gnome-backgrounds": [f"/usr/share/backgrounds/gnome/{n}.webp" for n in (
        "adwaita-d", "adwaita-l", "grid-l", "licorice-l", "pixels-l", "truchet-d", "wood-d")],
    "sway-backgrounds": ["/usr/share/backgrounds/sway/Sway_Wallpaper_Blue_2048x1536.png"],
}
PIP_NAMES = {"sklearn": "scikit-learn", "matplotlib": "matplotlib"}
SITE_TRAIN = {  # optional: found in site-packages or --site
    "sklearn": ["sklearn/datasets/images/china.jpg", "sklearn/datasets/images/flower.jpg"],
    "matplotlib": ["matplotlib/mpl-data/sample_data/grace_hopper.jpg"],
}

# ---- HELD OUT sources -------------------------------------------------------------------------
HELD_OUT = {  # package -> photos (renders and vector art of these packages are not used)
    "lomiri-wallpapers": [f"/usr/share/backgrounds/{n}.jpg" for n in (
        "Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace",
        "Picture_1A_by_freespace", "Wine_by_Jakkub_Mede", "aitzgorri_by_Aitzol_Berasategi",
        "friends_by_Aitzol_Berasategi", "life_by_Aitzol_Berasategi",
        "picosdeeuropa_by_Aitzol_Berasategi", "seeding_by_Clements_Engelhardt",
        "sunset_by_Aitzol_Berasategi")],
    "lomiri-wallpapers-20.04": [f"/usr/share/backgrounds/{n}.jpg" for n in (
        "Infinite-Sea_by_Aury88", "Kleiber_by_Lukas_Baubkus")],
}
CROPS_PER_PHOTO = 3


class DataError(Exception):
    """A missing source or a held-out set that differs from the manifest (one line, exit 2)."""


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def _limit(im: Image.Image, max_side: int) -> Image.Image:
    s = max_side / max(im.size)
    if s >= 1:
        return im
    return im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.LANCZOS)


def heldout_crops(im: Image.Image) -> list[tuple[Image.Image, tuple[int, int, int, int]]]:
    """``CROPS_PER_PHOTO`` crops of ``CROP x CROP`` pixels: the photo is resized to a short side of
    ``CROP_SHORT_SIDE`` (Lanczos), then cut left to right along its long side, the vertical
    position moving top to bottom so the crops cover different content."""
    s = CROP_SHORT_SIDE / min(im.size)
    im = im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.LANCZOS)
    out = []
    for k in range(CROPS_PER_PHOTO):
        f = (k + 0.5) / CROPS_PER_PHOTO
        x = round((im.width - CROP) * f)
        y = round((im.height - CROP) * (0.25 + 0.25 * k))
        box = (x, y, x + CROP, y + CROP)
        out.append((im.crop(box), box))
    return out


def _png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _missing_packages(groups: dict[str, list[str]]) -> list[str]:
    return [pkg for pkg, files in groups.items() if not all(Path(f).is_file() for f in files)]


def write_train(out: Path, sites: tuple[str, ...], max_side: int, quality: int) -> list[Path]:
    """Write the training images; returns their paths."""
    import skimage.data

    sk_dir = Path(skimage.data.__file__).parent
    jobs: list[tuple[str, Path, str]] = [("skimage", sk_dir / n, Path(n).stem)
                                         for n in SKIMAGE_PHOTOS]
    for name in PLASMA_WALLPAPERS:
        files = sorted(Path(PLASMA.format(name)).glob("*"))
        if not files:
            raise DataError("missing Debian package plasma-workspace-wallpapers: "
                            "apt-get install -y plasma-workspace-wallpapers")
        biggest = max(files, key=lambda p: Image.open(p).size[0] * Image.open(p).size[1])
        jobs.append(("plasma-workspace-wallpapers", biggest, name))
    missing = _missing_packages(DEBIAN_TRAIN)
    if missing:
        raise DataError(f"missing Debian packages: apt-get install -y {' '.join(missing)}")
    for pkg, files in DEBIAN_TRAIN.items():
        jobs += [(pkg, Path(f), Path(f).stem) for f in files]
    dirs = [Path(d) for d in sites] + [Path(p) for p in sys.path if p]
    dirs = [d for d in dirs + [Path(p) for p in site.getsitepackages()] if d.is_dir()]
    for source, rels in SITE_TRAIN.items():
        for rel in rels:
            path = next((d / rel for d in dirs if (d / rel).is_file()), None)
            if path is None:
                click.echo(f"note: {rel} not found (optional; install {PIP_NAMES[source]} or pass --site)")
                continue
            jobs.append((source, path, path.stem))
    written = []
    for source, path, stem in jobs:
        if not path.is_file():
            raise DataError(f"training photo {path} not found (scikit-image too old?)")
        dst = out / "train" / source / f"{stem}.jpg"
        dst.parent.mkdir(parents=True, exist_ok=True)
        _limit(_rgb(path), max_side).save(dst, quality=quality, subsampling=0)
        written.append(dst)
    return written


def build_heldout() -> tuple[dict, dict[str, bytes]]:
    """The held-out crops and masks in memory, and the manifest that describes them."""
    from sair_train.masks import BUCKETS, bucket_mask

    missing = _missing_packages(HELD_OUT)
    if missing:
        raise DataError(f"missing Debian packages for the held-out set: "
                        f"apt-get install -y {' '.join(missing)}")
    files: dict[str, bytes] = {}
    photos, crops = [], []
    for pkg, paths in HELD_OUT.items():
        for p in map(Path, paths):
            photos.append({"package": pkg, "path": str(p), "sha256": sha256_file(p)})
            for k, (im, box) in enumerate(heldout_crops(_rgb(p))):
                rel = f"heldout/{pkg}/{p.stem}_{k}.png"
                files[rel] = _png_bytes(im)
                crops.append({"file": rel, "photo": str(p), "box": list(box),
                              "sha256": hashlib.sha256(files[rel]).hexdigest()})
    crops.sort(key=lambda c: c["file"])  # the order sair-eval lists them in: mask i <-> crop i
    masks = []
    for bucket in BUCKETS:
        for i in range(len(crops)):
            m = bucket_mask(bucket, i, (CROP, CROP), MASK_SEED) > 0.5
            rel = f"heldout_masks/{bucket.replace('%', '')}/{i:03d}.png"
            files[rel] = _png_bytes(Image.fromarray((m * 255).astype(np.uint8)))
            masks.append({"file": rel, "bucket": bucket, "index": i, "crop": crops[i]["file"],
                          "hole_ratio": round(float(m.mean()), 4),
                          "sha256": hashlib.sha256(files[rel]).hexdigest()})
    manifest = {
        "about": "Fixed held-out set of make_sample_data.py: do not train, tune or select on it.",
        "crop": CROP, "crop_short_side": CROP_SHORT_SIDE, "mask_seed": MASK_SEED,
        "pairing": "mask i of every bucket goes with crop i (crops sorted by file name)",
        "photos": photos, "crops": crops, "masks": masks,
    }
    return manifest, files


def check_manifest(manifest: dict, pinned: dict) -> None:
    """Raise :class:`DataError` naming the first file whose hash differs from ``pinned``."""
    for key in ("photos", "crops", "masks"):
        mine = {e.get("file", e.get("path")): e["sha256"] for e in manifest[key]}
        ref = {e.get("file", e.get("path")): e["sha256"] for e in pinned[key]}
        if mine.keys() != ref.keys():
            raise DataError(f"held-out {key} differ from {MANIFEST.name} "
                            f"({len(mine)} vs {len(ref)} entries)")
        for name, digest in ref.items():
            if mine[name] != digest:
                raise DataError(f"held-out {key[:-1]} {name} differs from {MANIFEST.name} "
                                f"(another package or Pillow version?)")


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@click.command()
@click.option("--out", default="data/sample", show_default=True, type=click.Path())
@click.option("--site", "sites", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Extra folder holding unpacked packages (sklearn/, matplotlib/): training data.")
@click.option("--max-side", default=1024, show_default=True,
              help="Longer side of the training images.")
@click.option("--quality", default=95, show_default=True, help="JPEG quality of training images.")
@click.option("--write-manifest", is_flag=True,
              help=f"Rewrite scripts/{MANIFEST.name} instead of checking against it (only when "
                   "the held-out set is deliberately redefined).")
def main(out: str, sites: tuple[str, ...], max_side: int, quality: int,
         write_manifest: bool) -> None:
    """Write OUT/train/ (training images), OUT/heldout/ and OUT/heldout_masks/ (the fixed
    held-out crops and masks)."""
    out_dir = Path(out)
    try:
        manifest, files = build_heldout()
        if write_manifest:
            MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n")
        else:
            if not MANIFEST.is_file():
                raise DataError(f"{MANIFEST} missing; the held-out set is pinned there")
            check_manifest(manifest, json.loads(MANIFEST.read_text()))
        train = write_train(out_dir, sites, max_side, quality)
    except DataError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    for rel, data in files.items():
        dst = out_dir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
    mb = _du(out_dir / "train") / 2**20
    click.echo(f"{len(train)} training images ({mb:.1f} MB) under {out_dir / 'train'}; "
               f"{len(manifest['crops'])} held-out crops of {len(manifest['photos'])} photos "
               f"under {out_dir / 'heldout'}, {len(manifest['masks'])} masks under "
               f"{out_dir / 'heldout_masks'} (checked against {MANIFEST.name})")


if __name__ == "__main__":
    main()
