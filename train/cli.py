"""``sair-train``: train SAIR (or the LIIF ablation) on image folders; one process or torchrun."""

from __future__ import annotations

import os
import sys

import click

from sair_deploy.model.config import RECIPES

from .trainer import STAGES, TrainArgs


@click.command(context_settings={"show_default": True})
@click.argument("data", nargs=-1, required=False)
@click.option("-o", "--out", default=None,
              help="Run folder (checkpoints, log) [runs/sair; with --resume: the run's].")
@click.option("--config", "config", default="sair-small",
              help="Registered model config: sair-tiny, sair-small, sair-b16.")
@click.option("--no-semantic", is_flag=True, help="Train the LIIF ablation (no SIR, no CLIP).")
@click.option("--clip-weights", type=click.Path(), default=None,
              help="Local CLIP weights file (configs with a pretrained CLIP).")
@click.option("--clip-cache", type=click.Path(), default=None, help="open_clip cache folder.")
@click.option("--train-clip/--freeze-clip", default=None,
              help="Train the ViT too (turns the semantic loss off) [frozen, as in the paper].")
@click.option("--masks", type=click.Path(exists=True, file_okay=False), default=None,
              help="Mask folder (white = hole) instead of generated masks.")
@click.option("--recipe", type=click.Choice(list(RECIPES)), default=None,
              help="Training defaults for every option below marked [recipe] "
                   "[the config's: sair-b16 -> paper, sair-small/sair-tiny -> small].")
@click.option("--size", type=int, default=None, help="Training size T (multiple of 16) [recipe].")
@click.option("--crop", type=click.Choice(["whole", "zoom"]), default=None,
              help="Whole images resized to T, or random windows at random zooms [recipe].")
@click.option("--queries", type=int, default=None, help="Query points per image [recipe].")
@click.option("--scale-max", type=float, default=None,
              help="Largest super-resolution scale learned [recipe].")
@click.option("--scale-prob", type=float, default=None,
              help="Fraction of samples at a scale > 1 [recipe].")
@click.option("--hole-fraction", type=float, default=None,
              help="Fraction of queries forced inside the hole (0 = uniform pixels) [recipe].")
@click.option("--color-jitter", default=0.0, help="Colour jitter strength (0 = off; 0.2 is mild).")
@click.option("--repeat", default=1, help="Passes over the images per epoch.")
@click.option("--val-count", default=4, help="Images split off DATA for validation.")
@click.option("--val", "val", multiple=True, type=click.Path(exists=True),
              help="Validation images from another source (folder or list; no split of DATA).")
@click.option("--batch", type=int, default=None, help="Global batch size [recipe].")
@click.option("--epochs", type=int, default=None, help="[recipe]")
@click.option("--lr", type=float, default=None, help="[recipe]")
@click.option("--lr-step", type=int, default=None,
              help="Epochs between learning-rate halvings [recipe].")
@click.option("--lr-gamma", type=float, default=None, help="[recipe]")
@click.option("--sem-weight", default=1.0,
              help="Weight of the semantic L1 loss (0 = off; on only with pretrained, "
                   "frozen CLIP).")
@click.option("--sem-queries", default=1024,
              help="SIR reads per image (AIR's own read points) the semantic loss supervises.")
@click.option("--amp", type=click.Choice(["off", "bf16"]), default="off",
              help="bfloat16 autocast for training (GPUs).")
@click.option("--channels-last", is_flag=True,
              help="Run the AppEncoder's convolutions in NHWC layout (GPUs; "
                   "bench/train_throughput.py measures whether it helps).")
@click.option("--ssim-weight", default=0.0,
              help="Weight of an SSIM loss on a dense patch over a hole (0 = off).")
@click.option("--patch", default=32, help="Side of the SSIM patch in full-res pixels.")
@click.option("--init", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Fine-tune: start from this checkpoint (its config and weights).")
@click.option("--fill", type=click.Choice(["zero", "pushpull", "onion"]), default=None,
              help="Classical fill the encoders see in the holes [the config's].")
@click.option("--residual/--no-residual", default=None,
              help="AIR predicts a residual over the fill [the config's].")
@click.option("--base", type=click.Choice(["bilinear", "bicubic", "lanczos"]), default=None,
              help="What AIR's residual is added to at scales > 1 [the config's].")
@click.option("--sr-prob", type=click.FloatRange(0, 1), default=0.0,
              help="Fraction of super-resolution samples: a crop downsampled by S in "
                   "[1, --scale-max] (Pillow antialiased bicubic) is the input, the crop the "
                   "ground truth, no holes.")
@click.option("--sr-holes", type=click.FloatRange(0, 1), default=0.0,
              help="Fraction of super-resolution samples that also get holes.")
@click.option("--stage", type=click.Choice(STAGES), default="joint")
@click.option("--sir-epochs", default=50, help="Epochs of the SIR stage in sir-then-air.")
@click.option("--seed", default=0)
@click.option("--workers", default=0, help="DataLoader worker processes.")
@click.option("--ckpt-every", default=500, help="Steps between checkpoints.")
@click.option("--log-every", default=10, help="Steps between log lines.")
@click.option("--val-every", default=1, help="Epochs between validations.")
@click.option("--max-minutes", type=float, default=None,
              help="Stop cleanly (with a final checkpoint) after this wall time.")
@click.option("--max-steps", type=int, default=None, help="Stop after this many steps.")
@click.option("--device", default="auto", help="auto, cpu or cuda.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--resume", type=click.Path(), default=None,
              help="Continue a run (its folder or state.pt) with its saved options; options that "
                   "differ from the run's are refused, except -o, --max-steps, --max-minutes, "
                   "--epochs, --device, --workers and logging/checkpoint intervals.")
@click.option("--force", is_flag=True,
              help="Start a new run in a folder that holds an earlier run (its run files are removed).")
@click.pass_context
def cli(ctx: click.Context, data: tuple[str, ...], out: str | None, config: str, no_semantic: bool,
        no_progress: bool, resume: str | None, force: bool, **opts) -> None:
    """Train on DATA: image folders (searched recursively) or list files of image paths."""
    from click.core import ParameterSource

    from sair_deploy.errors import SairError
    from sair_deploy.files import terminate_as_interrupt
    from sair_deploy.model.semantic import WeightsNotFound

    from .runfolder import Stopped
    from .trainer import train

    if not data and not resume:
        raise click.UsageError("give at least one image folder or list file (or --resume)")
    opts["val"] = list(opts["val"])
    args = TrainArgs(data=list(data), out=out, config=config, no_semantic=no_semantic,
                     progress=not no_progress, **opts)
    names = {"no_progress": "progress"}  # command-line parameters that are TrainArgs fields
    given = {names.get(n, n) for n in ctx.params
             if ctx.get_parameter_source(n) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)}
    try:
        with terminate_as_interrupt():
            summary = train(args, resume=resume, force=force, given=given)
    except (SairError, WeightsNotFound, FileNotFoundError, ValueError) as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(getattr(err, "exit_code", 2))
    except Stopped as stop:
        click.echo(str(stop), err=True)
        sys.exit(128 + stop.signum)
    except KeyboardInterrupt:
        click.echo("interrupted; the run's last checkpoint (if any) is intact", err=True)
        sys.exit(130)
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun only the first process reports
    click.echo(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in summary.items()))


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
