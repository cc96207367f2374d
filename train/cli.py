"""``sair-train``: train SAIR (or the LIIF ablation) on image folders; one process or torchrun."""

from __future__ import annotations

import os
import sys

import click

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
              help="Train the ViT too [default: only when it has no pretrained weights].")
@click.option("--masks", type=click.Path(exists=True, file_okay=False), default=None,
              help="Mask folder (white = hole) instead of generated masks.")
@click.option("--size", default=128, help="Training crop size T (multiple of 16).")
@click.option("--queries", default=2304, help="Query points per image.")
@click.option("--scale-max", default=4.0, help="Largest super-resolution scale learned.")
@click.option("--scale-prob", default=0.5, help="Fraction of samples at a scale > 1.")
@click.option("--hole-fraction", default=0.5, help="Fraction of queries inside the hole.")
@click.option("--color-jitter", default=0.0, help="Colour jitter strength (0 = off; 0.2 is mild).")
@click.option("--repeat", default=1, help="Passes over the images per epoch.")
@click.option("--val-count", default=4, help="Images split off DATA for validation.")
@click.option("--val", "val", multiple=True, type=click.Path(exists=True),
              help="Validation images from another source (folder or list; no split of DATA).")
@click.option("--batch", default=16, help="Global batch size.")
@click.option("--epochs", default=200)
@click.option("--lr", default=1e-4)
@click.option("--lr-step", default=100, help="Epochs between learning-rate halvings.")
@click.option("--lr-gamma", default=0.5)
@click.option("--sem-weight", default=1.0, help="Weight of the semantic L1 loss (0 = off).")
@click.option("--ssim-weight", default=0.0,
              help="Weight of an SSIM loss on a dense patch over a hole (0 = off).")
@click.option("--patch", default=32, help="Side of the SSIM patch in full-res pixels.")
@click.option("--init", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Fine-tune: start from this checkpoint (its config and weights).")
@click.option("--fill", type=click.Choice(["zero", "pushpull", "onion"]), default=None,
              help="Classical fill the encoders see in the holes [the config's].")
@click.option("--residual/--no-residual", default=None,
              help="AIR predicts a residual over the fill [the config's].")
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
