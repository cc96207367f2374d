"""``sair-inpaint``: fill the holes of a photo (or a folder of photos) at any output scale."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .errors import InputError, SairError
from .version import __version__

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def _fail(err: SairError) -> None:
    click.echo(f"error: {err}", err=True)
    sys.exit(err.exit_code)


def _inpaint_one(inpainter, image_path: Path, mask_path: Path, out: Path, scale: float,
                 force: bool, quiet: bool) -> str:
    """Inpaint one pair and write it; returns a one-line report."""
    from .io import read_image, read_mask, save_image

    if out.exists() and not force:
        raise InputError(f"{out} already exists; pass --force to overwrite it")
    image = read_image(image_path)
    mask = read_mask(mask_path, image.shape[:2])
    holes = float(mask.mean())
    if holes == 1.0:
        raise InputError(f"mask {mask_path} covers the whole image: there is nothing to inpaint from")
    if holes == 0.0:
        if scale == 1.0:
            save_image(out, image, force)
            return f"mask {mask_path} is empty: copied the image to {out}"
        note = "mask is empty: upscaled without holes"
    else:
        note = f"{holes:.1%} holes"
    inpainter.set_image(image, mask)
    result = inpainter.inpaint(scale)
    save_image(out, result, force)
    return f"wrote {out} ({result.shape[1]}x{result.shape[0]}, {note})"


def _pairs(images: Path, masks: Path) -> list[tuple[Path, Path | None]]:
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if masks.is_file():
        return [(p, masks) for p in files]
    by_stem = {p.stem: p for p in masks.iterdir() if p.suffix.lower() in IMAGE_EXTS}
    return [(p, by_stem.get(p.stem) or by_stem.get(p.stem + "_mask")) for p in files]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("image", type=click.Path(path_type=Path))
@click.argument("mask", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Output file (or folder, for folder input). Default: IMAGE_inpainted.png beside IMAGE.")
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="Output scale, any number >= 1; the output is round(S*H) x round(S*W).")
@click.option("--model", "--checkpoint", "model", type=click.Path(path_type=Path),
              help="A .safetensors checkpoint or an export directory. Default: the bundled demo model.")
@click.option("--backend", type=click.Choice(["auto", "torch", "onnx", "trt"]), default="auto",
              show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto: a CUDA GPU when the backend can use one.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "int8", "fp16"]), default="auto",
              show_default=True, help="auto: the fastest the device supports whose accuracy gate passed "
              "for the model. bf16: torch on CPUs with bfloat16 units; int8: an export written with "
              "sair-export --int8; fp16: CUDA.")
@click.option("--tile", type=int, default=None, help="AppEncoder tile size in pixels [512, or the export's].")
@click.option("--overlap", type=int, default=None, help="Tile overlap; default: the encoder's receptive radius.")
@click.option("--chunk", type=int, default=None, help="Queries per graph call [32768, or the export's].")
@click.option("--reference", is_flag=True, help="Evaluate the literal paper formulation (slow; torch).")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.version_option(__version__, prog_name="sair-inpaint")
def cli(image: Path, mask: Path, output: Path | None, scale: float, model: Path | None, backend: str,
        device: str, precision: str, tile: int | None, overlap: int | None, chunk: int | None,
        reference: bool, force: bool, quiet: bool) -> None:
    """Inpaint IMAGE where MASK is white (any value above half range is a hole).

    IMAGE and MASK may be folders: images are paired with masks of the same name (or NAME_mask),
    or MASK may be a single file used for every image; bad pairs are reported and skipped.
    """
    try:
        if not (scale >= 1.0) or scale != scale or scale == float("inf"):
            raise InputError(f"--scale must be a number >= 1, got {scale}")
        if tile is not None and (tile <= 0 or tile % 4):
            raise InputError(f"--tile must be a positive multiple of 4, got {tile}")
        if chunk is not None and chunk < 1:
            raise InputError(f"--chunk must be positive, got {chunk}")
        for p, what in ((image, "image"), (mask, "mask")):
            if not p.exists():
                raise InputError(f"{what} {p} does not exist")
        from .api import load_inpainter

        folder = image.is_dir()
        if folder and not output:
            raise InputError("folder input needs -o OUTPUT_FOLDER")
        if not folder and mask.is_dir():
            raise InputError(f"mask {mask} is a folder but image {image} is a file")
        inpainter = load_inpainter(model, backend=backend, device=device, precision=precision, tile=tile,
                                   overlap=overlap, chunk=chunk, progress=not quiet, reference=reference)
        ran = inpainter.backend  # said on the output line: which backend and precision ran
        ran_precision = getattr(ran, "precision", None) or \
            ((getattr(ran, "manifest", None) or {}).get("trt") or {}).get("precision", "fp32")
        ran_note = f" [{ran.name}, {ran_precision}]"
        if not folder:
            out = output or image.with_name(f"{image.stem}_inpainted.png")
            click.echo(_inpaint_one(inpainter, image, mask, out, scale, force, quiet) + ran_note, err=True)
            return
        output.mkdir(parents=True, exist_ok=True)
        pairs = _pairs(image, mask)
        if not pairs:
            raise InputError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) in {image}")
        failed = 0
        from tqdm.auto import tqdm
        for img_path, mask_path in tqdm(pairs, desc="images", disable=quiet):
            out = output / f"{img_path.stem}.png"
            try:
                if mask_path is None:
                    raise InputError(f"no mask named {img_path.stem} in {mask}")
                msg = _inpaint_one(inpainter, img_path, mask_path, out, scale, force, True)
                if quiet:
                    continue
                tqdm.write(msg, file=sys.stderr)
            except InputError as err:
                failed += 1
                tqdm.write(f"skipped {img_path.name}: {err}", file=sys.stderr)
        click.echo(f"{len(pairs) - failed} of {len(pairs)} images inpainted into {output}{ran_note}", err=True)
        if failed:
            sys.exit(1)
    except SairError as err:
        _fail(err)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
