"""``sair-serve``: the inpainter as a model on NVIDIA Triton Inference Server (via PyTriton).

Triton does the serving (HTTP/gRPC on the KServe v2 protocol, health, metrics, instances); this
module only binds :func:`sair_deploy.serve.job.run_job` to it and starts it safely.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Callable

import click
import numpy as np

from ..errors import InputError, ModelError, SairError
from ..version import __version__
from .job import Limits, run_job
from .protocol import INPUT_IMAGE, INPUT_MASK, INPUT_SCALE, MODEL_NAME, OUTPUT, wrap_error

LOG = logging.getLogger("sair_deploy.serve")


class RequestRefused(Exception):
    """A bad request: Triton returns it as an error response and keeps serving."""


def python_library_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: os.environ) with the running interpreter's libpython directory first on
    LD_LIBRARY_PATH.

    Triton's Python backend stub links libpython dynamically. Left to the system's search path it
    can load another patch release of libpython than the interpreter that runs the model (e.g. the
    system's 3.11.2 under a 3.11.7 virtualenv), and every model then fails to initialise.
    """
    env = dict(os.environ if env is None else env)
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and sysconfig.get_config_var("Py_ENABLE_SHARED"):
        parts = [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p and p != libdir]
        env["LD_LIBRARY_PATH"] = ":".join([libdir, *parts])
    return env


def check_ports_free(host: str, ports: dict[str, int]) -> None:
    """Refuse, with one line, ports that are taken or an address that is not this machine's (Triton
    itself would only time out, after a minute, with a traceback from its client)."""
    for option, port in ports.items():
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((host, port))
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port} ({option}): {exc.strerror or exc}") from None


def make_infer(inpainter, limits: Limits) -> Callable:
    """A PyTriton inference callable around one inpainter (one model instance, one session)."""

    def infer(requests: list) -> list[dict[str, np.ndarray]]:
        responses = []
        for request in requests:
            try:
                image = _one_bytes(request, INPUT_IMAGE)
                mask = _one_bytes(request, INPUT_MASK)
                scale = np.asarray(request[INPUT_SCALE], dtype=np.float64).reshape(-1)
                if scale.size != 1:
                    raise InputError(f"input 'scale' must hold one number, got {scale.size}")
                result = run_job(inpainter, image, mask, float(scale[0]), limits)
            except SairError as err:
                raise RequestRefused(wrap_error(err)) from None
            except MemoryError:
                raise RequestRefused(wrap_error(InputError("the server ran out of memory for this "
                                                           "request; send a smaller image or scale"))) from None
            responses.append({OUTPUT: np.array([result.png], dtype=np.object_)})
        return responses

    return infer


def _one_bytes(request, name: str) -> bytes:
    a = np.asarray(request[name]).reshape(-1)
    if a.size != 1:
        raise InputError(f"input '{name}' must hold one encoded image, got {a.size} elements")
    value = a[0]
    return bytes(value) if not isinstance(value, bytes) else value


def serve(model: Path | None, backend: str, device: str, instances: int, host: str, http_port: int,
          grpc_port: int, metrics_port: int, limits: Limits, exit_timeout: int = 30,
          verbose: bool = False) -> None:
    """Load ``instances`` inpainters, start Triton with them as model ``sair_inpaint`` and serve
    until SIGTERM or SIGINT; then stop Triton (in-flight requests get ``exit_timeout`` seconds)."""
    from ..api import load_inpainter

    try:
        from pytriton.model_config import ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig
    except ImportError:
        raise InputError("sair-serve needs PyTriton: pip install 'sair-deploy[serve]'") from None
    if int(np.__version__.split(".")[0]) >= 2:
        raise InputError(f"sair-serve needs numpy<2 (PyTriton's Python backend stub corrupts BYTES inputs "
                         f"under numpy {np.__version__}); install the serve extra into its own venv")

    check_ports_free(host, {"--http-port": http_port, "--grpc-port": grpc_port, "--metrics-port": metrics_port})
    inpainters = [load_inpainter(model, backend=backend, device=device) for _ in range(instances)]
    logdir = tempfile.mkdtemp(prefix="sair-serve-")  # Triton's own log, unless --verbose
    os.environ.update(python_library_env())  # inherited by tritonserver and its Python backend stubs
    config = TritonConfig(
        http_address=host, http_port=http_port, grpc_address=host, grpc_port=grpc_port,
        metrics_address=host, metrics_port=metrics_port, allow_sagemaker=False, allow_vertex_ai=False,
        exit_timeout_secs=exit_timeout, log_verbose=1 if verbose else 0,
        log_file=None if verbose else Path(logdir) / "tritonserver.log",
    )

    def on_term(signum, frame):  # serve() below catches KeyboardInterrupt and stops Triton
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        with Triton(config=config) as triton:
            triton.bind(
                model_name=MODEL_NAME,
                infer_func=[make_infer(inp, limits) for inp in inpainters],
                inputs=[Tensor(name=INPUT_IMAGE, dtype=np.bytes_, shape=(1,)),
                        Tensor(name=INPUT_MASK, dtype=np.bytes_, shape=(1,)),
                        Tensor(name=INPUT_SCALE, dtype=np.float32, shape=(1,))],
                outputs=[Tensor(name=OUTPUT, dtype=np.bytes_, shape=(1,))],
                config=ModelConfig(batching=False),
                strict=True,
            )
            triton.run()
            click.echo(f"sair-serve: model {MODEL_NAME} ({instances} instance{'s' * (instances > 1)}) ready "
                       f"on http://{host}:{http_port} (gRPC {host}:{grpc_port}, metrics "
                       f"{host}:{metrics_port}); SIGTERM or Ctrl+C stops it", err=True)
            triton.serve()
    except KeyboardInterrupt:
        pass
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    click.echo("sair-serve: stopped", err=True)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "--checkpoint", "model", type=click.Path(path_type=Path),
              help="A .safetensors checkpoint or an export directory. Default: the bundled demo model.")
@click.option("--backend", type=click.Choice(["auto", "torch", "onnx", "trt"]), default="auto",
              show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--instances", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Model instances, each with its own backend session, for concurrent requests.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (HTTP, gRPC and metrics); 0.0.0.0 for every interface.")
@click.option("--http-port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=8001, show_default=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=8002, show_default=True)
@click.option("--max-request-mb", type=click.FloatRange(min=0, min_open=True), default=32.0,
              show_default=True, help="Largest encoded image + mask a request may carry.")
@click.option("--max-megapixels", type=click.FloatRange(min=0, min_open=True), default=16.8,
              show_default=True, help="Largest decoded input, and largest output, in megapixels.")
@click.option("--verbose", is_flag=True, help="Triton's and PyTriton's own logs.")
@click.version_option(__version__, prog_name="sair-serve")
def cli(model: Path | None, backend: str, device: str, instances: int, host: str, http_port: int,
        grpc_port: int, metrics_port: int, max_request_mb: float, max_megapixels: float,
        verbose: bool) -> None:
    """Serve inpainting on NVIDIA Triton Inference Server as model `sair_inpaint`.

    Inputs: `image`, `mask` (BYTES, one encoded PNG/JPEG each), `scale` (FP32, [1]); output:
    `inpainted` (BYTES, an encoded PNG). Clients: `sair-inpaint --server http://HOST:PORT`,
    tritonclient, or any KServe v2 client.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s")
    if not verbose:
        logging.getLogger("pytriton").setLevel(logging.ERROR)
    if len({http_port, grpc_port, metrics_port}) < 3:
        _fail(InputError("--http-port, --grpc-port and --metrics-port must differ"))
    pixels = int(max_megapixels * 1e6)
    limits = Limits(max_request_bytes=int(max_request_mb * 2**20), max_input_pixels=pixels,
                    max_output_pixels=pixels)
    try:
        serve(model, backend, device, instances, host, http_port, grpc_port, metrics_port, limits,
              verbose=verbose)
    except SairError as err:
        _fail(err)
    except KeyboardInterrupt:
        click.echo("sair-serve: stopped", err=True)
    except Exception as exc:  # noqa: BLE001 - Triton failed to start (port taken, bad address, ...)
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        _fail(ModelError(f"Triton did not start: {first} (run with --verbose to see its log)"))


def _fail(err: SairError) -> None:
    click.echo(f"error: {err}", err=True)
    sys.exit(err.exit_code)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
