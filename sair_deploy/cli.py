"""``sair-inpaint``: fill the holes of a photo (or a folder of photos) at any output scale."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np

from .errors import InputError, SairError
from .version import __version__

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def _fail(err: SairError) -> None:
    click.echo(f"error: {err}", err=True)
    sys.exit(err.exit_code)


def _inpaint_one(inpainter, image_path: Path, mask_path: Path, out: Path, scale: float,
                 force: bool, quiet: bool) -> str:
    """Inpaint one pair and write it; returns a one-line report."""
    from .io import check_output_path, check_output_size, image_size, read_image, read_mask, save_image

    check_output_path(out, force)
    check_output_size(*image_size(image_path), scale, out)
    image = read_image(image_path, dtype=np.uint8)  # the runtime works on 8 bits
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
    inpainter.reset()  # the input's memory goes before the output is encoded (large images)
    del image, mask
    save_image(out, result, force)
    return f"wrote {out} ({result.shape[1]}x{result.shape[0]}, {note})"


def stats_line(stats: dict) -> str:
    """``inp.stats`` as one line: what the runtime asked of its backend for the last image."""
    graphs = ", ".join(f"{k} {v}" for k, v in stats["graphs"].items())
    return (f"stats: {stats['calls']} graph calls ({graphs}); {stats['h2d_bytes'] / 1e6:.2f} MB to "
            f"the device, {stats['d2h_bytes'] / 1e6:.2f} MB back; host glue {stats['glue_ms']:.0f} ms "
            f"of {stats['total_ms']:.0f} ms [{stats['backend']}, {stats['precision']}]")


def _pairs(images: Path, masks: Path) -> list[tuple[Path, Path | None, str | None]]:
    """``(image, mask or None, why not)`` for every image in the folder ``images``."""
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if masks.is_file():
        return [(p, masks, None) for p in files]
    by_stem: dict[str, list[Path]] = {}
    for p in sorted(masks.iterdir()):
        if p.suffix.lower() in IMAGE_EXTS and p.is_file():
            by_stem.setdefault(p.stem, []).append(p)
    out = []
    for p in files:
        found = by_stem.get(p.stem) or by_stem.get(p.stem + "_mask")
        if not found:
            out.append((p, None, f"no mask named {p.stem} in {masks}"))
        elif len(found) > 1:
            out.append((p, None, f"several masks could be its mask ({', '.join(f.name for f in found)}); "
                                 f"keep one"))
        else:
            out.append((p, found[0], None))
    return out


def _output_names(images: list[Path]) -> dict[Path, str]:
    """A distinct output file name (``.png``) for every input image.

    ``a.png`` gives ``a.png``; when two inputs share a stem (``a.jpg`` and ``a.png``), each keeps
    its extension in the name (``a_jpg.png``, ``a_png.png``). Names are compared case-folded, so
    the mapping stays one-to-one on case-insensitive file systems too.
    """
    stems: dict[str, int] = {}
    for p in images:
        stems[p.stem.casefold()] = stems.get(p.stem.casefold(), 0) + 1
    names = {p: (f"{p.stem}.png" if stems[p.stem.casefold()] == 1
                 else f"{p.stem}_{p.suffix[1:].lower()}.png") for p in images}
    taken: dict[str, int] = {}
    for n in names.values():
        taken[n.casefold()] = taken.get(n.casefold(), 0) + 1
    for p, n in names.items():  # a crafted name (a_jpg.png beside a.jpg and a.png): number it
        k = 1
        while taken[n.casefold()] > 1:
            taken[n.casefold()] -= 1
            k += 1
            n = f"{p.stem}_{p.suffix[1:].lower()}_{k}.png"
            taken[n.casefold()] = taken.get(n.casefold(), 0) + 1
        names[p] = n
    return names


def _check_folder_output(output: Path) -> None:
    """The output folder (or, if it does not exist yet, its nearest existing parent) must take
    new files; checked before any work."""
    from .files import check_writable_dir

    if output.exists() and not output.is_dir():
        raise InputError(f"output {output} is a file; folder input needs an output folder")
    parent = output
    while not parent.exists():
        parent = parent.parent
    check_writable_dir(parent, "output folder" if parent == output else "folder")


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
@click.option("--chunk", type=int, default=None,
              help="Queries per graph call [1024 on a CPU, a whole tile on a GPU, or the export's].")
@click.option("--flips", type=click.Choice(["1", "2", "4"]), default="1", show_default=True,
              help="Self-ensemble: also inpaint the image mirrored left-right (2) and upside down (4) "
              "and average; slightly better holes for 2x or 4x the time.")
@click.option("--stats", is_flag=True, help="After each image, one line: graph calls, bytes to and "
              "from the device, host time outside the backend.")
@click.option("--reference", is_flag=True, help="Evaluate the literal paper formulation (slow; torch).")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--server", metavar="URL", default=None,
              help="Send the jobs to a running sair-serve (Triton's HTTP port, e.g. http://127.0.0.1:8000) "
                   "instead of loading a model here.")
@click.version_option(__version__, prog_name="sair-inpaint")
def cli(image: Path, mask: Path, output: Path | None, scale: float, model: Path | None, backend: str,
        device: str, precision: str, tile: int | None, overlap: int | None, chunk: int | None,
        flips: str, stats: bool, reference: bool, force: bool, quiet: bool, server: str | None) -> None:
    """Inpaint IMAGE where MASK is white (any value above half range is a hole).

    IMAGE and MASK may be folders: images are paired with masks of the same name (or NAME_mask),
    or MASK may be a single file used for every image; bad pairs are reported and skipped.
    """
    from .files import Terminated, terminate_as_interrupt

    try:
        with terminate_as_interrupt():
            _run(image, mask, output, scale, model, backend, device, precision, tile, overlap, chunk,
                 reference, force, quiet, server, stats, int(flips))
    except SairError as err:
        _fail(err)
    except KeyboardInterrupt as exc:
        click.echo("terminated" if isinstance(exc, Terminated) else "interrupted", err=True)
        sys.exit(143 if isinstance(exc, Terminated) else 130)


def _run(image: Path, mask: Path, output: Path | None, scale: float, model: Path | None, backend: str,
         device: str, precision: str, tile: int | None, overlap: int | None, chunk: int | None,
         reference: bool, force: bool, quiet: bool, server: str | None = None,
         stats: bool = False, flips: int = 1) -> None:
    """The command: every option, path and output size is checked before the model is loaded."""
    from .io import MAX_OUTPUT_PIXELS, MIN_SIDE, check_output_path, check_output_size, image_size

    if not (scale >= 1.0) or scale != scale or scale == float("inf"):
        raise InputError(f"--scale must be a number >= 1, got {scale}")
    if scale * MIN_SIDE > MAX_OUTPUT_PIXELS ** 0.5:
        raise InputError(f"--scale {scale:g} is too large: even a {MIN_SIDE}x{MIN_SIDE} image would "
                         f"give more than {MAX_OUTPUT_PIXELS / 1e6:.0f} Mpx")
    if tile is not None and (tile <= 0 or tile % 4):
        raise InputError(f"--tile must be a positive multiple of 4, got {tile}")
    if chunk is not None and chunk < 1:
        raise InputError(f"--chunk must be positive, got {chunk}")
    if server and flips != 1:
        raise InputError("--flips is a local option; the server runs with its own settings")
    for p, what in ((image, "image"), (mask, "mask")):
        if not p.exists():
            raise InputError(f"{what} {p} does not exist")
    from .api import load_inpainter

    folder = image.is_dir()
    if folder and not output:
        raise InputError("folder input needs -o OUTPUT_FOLDER")
    if not folder and mask.is_dir():
        raise InputError(f"mask {mask} is a folder but image {image} is a file")

    note = [""]  # said on the output line: which backend and precision ran

    def load():
        if server:  # the same jobs, run by sair-serve
            return None
        inp = load_inpainter(model, backend=backend, device=device, precision=precision, tile=tile,
                             overlap=overlap, chunk=chunk, progress=not quiet, reference=reference,
                             flips=flips)
        note[0] = f" [{inp.backend.name}, {inp.backend.precision}]"
        return inp

    if server:
        from .serve.client import remote_inpaint_one

        def run_one(_, img, msk, out, scale, force, quiet):
            return remote_inpaint_one(server, img, msk, out, scale, force)
    else:
        run_one = _inpaint_one

    if not folder:
        out = output or image.with_name(f"{image.stem}_inpainted.png")
        check_output_path(out, force)
        check_output_size(*image_size(image), scale, out)
        image_size(mask, "mask")  # a missing or corrupt mask is reported before the model loads
        _refuse_overwriting_inputs(out, [image, mask])
        inpainter = load()
        click.echo(run_one(inpainter, image, mask, out, scale, force, quiet) + note[0], err=True)
        if stats and inpainter is not None and inpainter.stats:
            click.echo(stats_line(inpainter.stats), err=True)
        return

    _check_folder_output(output)
    pairs = _pairs(image, mask)
    if not pairs:
        raise InputError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) in {image}")
    names = _output_names([p for p, _, _ in pairs])
    inputs = [p for p, _, _ in pairs] + [m for _, m, _ in pairs if m is not None]
    failed, jobs = 0, []
    from tqdm.auto import tqdm

    for img_path, mask_path, why in pairs:  # every pair's problems first, before any inference
        out = output / names[img_path]
        try:
            if why:
                raise InputError(why)
            if out.is_dir():
                raise InputError(f"output {out} is a folder")
            if out.exists() and not force:
                raise InputError(f"{out} already exists; pass --force to overwrite it")
            _refuse_overwriting_inputs(out, inputs)
            jobs.append((img_path, mask_path, out))
        except InputError as err:
            failed += 1
            click.echo(f"skipped {img_path.name}: {err}", err=True)
    if jobs:
        output.mkdir(parents=True, exist_ok=True)
        inpainter = load()
        for img_path, mask_path, out in tqdm(jobs, desc="images", disable=quiet):
            try:
                msg = run_one(inpainter, img_path, mask_path, out, scale, force, True)
                if stats and inpainter is not None and inpainter.stats:
                    msg += "\n" + stats_line(inpainter.stats)
                if not quiet:
                    tqdm.write(msg, file=sys.stderr)
            except InputError as err:
                failed += 1
                tqdm.write(f"skipped {img_path.name}: {err}", file=sys.stderr)
    click.echo(f"{len(pairs) - failed} of {len(pairs)} images inpainted into {output}{note[0]}", err=True)
    if failed:
        sys.exit(1)


def _refuse_overwriting_inputs(out: Path, inputs: list[Path]) -> None:
    """Never write an output over one of this run's inputs (even with --force)."""
    target = out.resolve()
    for p in inputs:
        if p.resolve() == target:
            raise InputError(f"output {out} is one of the inputs; choose another output")


def main() -> None:
    from .backends import onnx_backend

    # this process runs nothing but our graphs: its ONNX Runtime sessions share one thread pool
    onnx_backend.SHARE_CPU_THREADS = True
    cli()


if __name__ == "__main__":
    main()
