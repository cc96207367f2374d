"""``sair-export CHECKPOINT -o DIR [--fp16] [--int8 [--calib DIR]] [--gate] [--trt] [--check] [--force]``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sair_deploy.errors import SairError
from sair_deploy.version import __version__


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Export directory (graphs, manifest.json, trt/ engines).")
@click.option("--fp16", is_flag=True, help="Also write float16 graphs (precision inside the graph).")
@click.option("--int8", is_flag=True, help="Also write int8 graphs (QDQ, per-channel weights, static "
              "calibration) for ONNX Runtime's CPU provider; kept only if they pass the "
              "accuracy gate against float32.")
@click.option("--calib", type=click.Path(path_type=Path), default=None,
              help="Calibration photos for --int8 (a folder; default: the training photos shipped for "
              "it). Never the held-out set.")
@click.option("--int8-query", type=click.Choice(["static", "dynamic", "float"]), default="static",
              show_default=True, help="How --int8 treats the query graphs: QDQ with calibrated ranges, "
              "dynamic quantization, or left float32 (faster for narrow MLPs: measure with "
              "bench/onnx_speed.py --int8-variants).")
@click.option("--gate", "gate", is_flag=True, help="Also measure the bf16 accuracy gate (torch, on a "
              "CPU with bfloat16 units) and record it in manifest.json and the checkpoint's metadata.")
@click.option("--gate-images", type=click.Path(path_type=Path), default=None,
              help="Held-out photos for the accuracy gates [data/sample/heldout, written by "
              "scripts/make_sample_data.py].")
@click.option("--allow-failed-gate", is_flag=True,
              help="Keep int8 graphs that failed their accuracy gate (auto precision still skips them).")
@click.option("--trt", is_flag=True, help="Build TensorRT engines (needs TensorRT and a CUDA GPU); float16 engines with --fp16.")
@click.option("--check", is_flag=True, help="Compare every export with PyTorch; fail past tolerance.")
@click.option("--force", is_flag=True, help="Overwrite an existing export directory.")
@click.option("--tile", type=int, default=None, help="Runtime tile size the TensorRT profiles cover.")
@click.option("--chunk", type=int, default=None, help="Queries per call the TensorRT profiles cover.")
@click.option("--workspace-mb", type=int, default=4096, show_default=True,
              help="TensorRT builder workspace limit.")
@click.version_option(__version__, prog_name="sair-export")
def cli(checkpoint: Path, out_dir: Path, fp16: bool, int8: bool, calib: Path | None, int8_query: str, gate: bool,
        gate_images: Path | None, allow_failed_gate: bool, trt: bool, check: bool, force: bool,
        tile: int | None, chunk: int | None, workspace_mb: int) -> None:
    """Export CHECKPOINT (.safetensors) to ONNX graphs (and TensorRT engines) in DIR."""
    import warnings

    from sair_deploy.files import Terminated, terminate_as_interrupt

    from .pipeline import export_checkpoint, run_checks

    warnings.filterwarnings("ignore")  # the exporter's deprecation chatter
    runtime = {k: v for k, v in (("tile", tile), ("chunk", chunk)) if v is not None}
    try:
        with terminate_as_interrupt():
            manifest = export_checkpoint(checkpoint, out_dir, fp16=fp16, trt=trt, force=force,
                                         runtime=runtime, workspace_mb=workspace_mb, log=click.echo,
                                         int8=int8, calib=calib, gate=gate, gate_images=gate_images,
                                         allow_failed_gate=allow_failed_gate, int8_query=int8_query)
            ok = not check or run_checks(checkpoint, out_dir, manifest, log=click.echo)
        if not ok:
            click.echo("error: parity check failed (see the FAIL lines above)", err=True)
            sys.exit(1)
    except SairError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt as exc:  # the previous export, if any, is still in place
        click.echo("terminated" if isinstance(exc, Terminated) else "interrupted", err=True)
        sys.exit(143 if isinstance(exc, Terminated) else 130)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
