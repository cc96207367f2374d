"""Write a validation set for choosing runtime options, from TRAINING photos only.

Every source that packages ship is either trained on or held out (``make_sample_data.py``), so
there is no third, unseen source to validate on. Choices that train no weights (the
self-ensemble's number of flips, say) are made here instead: 39 crops of 256x256, three from
each of 13 photos of the training set (``plasma-workspace-wallpapers``, ``ukui-wallpapers``), cut
as the held-out crops are, with ``sair-eval``'s masks drawn with ``--seed 1`` (the held-out set
uses seed 0). The model has seen these photos, so the set flatters it; it is only used to
compare options with each other, never reported as a result.

Usage: ``python scripts/make_val_set.py [--train data/sample/train] [--out data/sample/val]``,
then ``sair-eval MODEL data/sample/val --seed 1 --no-baselines [--flips N]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_sample_data import heldout_crops  # noqa: E402  (the same crop rule)

PHOTOS = {  # photographs (not renders or patterns), so the set looks like the held-out one
    "plasma-workspace-wallpapers": ["Altai", "Autumn", "BytheWater", "Cascade", "ColorfulCups",
                                    "EveningGlow", "FallenLeaf", "Kite", "MilkyWay", "Path",
                                    "summer_1am"],
    "ukui-wallpapers": ["calla", "goldfish"],
}


@click.command()
@click.option("--train", default="data/sample/train", type=click.Path(path_type=Path),
              help="The training folder make_sample_data.py wrote.")
@click.option("--out", default="data/sample/val", type=click.Path(path_type=Path))
def main(train: Path, out: Path) -> None:
    """Write OUT/<source>-<photo>-<k>.png."""
    missing = [f"{train}/{src}/{n}.jpg" for src, names in PHOTOS.items() for n in names
               if not (train / src / f"{n}.jpg").is_file()]
    if missing:
        raise click.ClickException(f"{len(missing)} training photos missing (first: {missing[0]}); "
                                   f"run scripts/make_sample_data.py first")
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for src, names in PHOTOS.items():
        for name in names:
            with Image.open(train / src / f"{name}.jpg") as im:
                for k, (crop, _) in enumerate(heldout_crops(im.convert("RGB"))):
                    crop.save(out / f"{src}-{name}-{k}.png")
                    n += 1
    click.echo(f"wrote {n} crops to {out}")


if __name__ == "__main__":
    main()
