"""The client side of ``sair-serve``: one job over Triton's HTTP API (tritonclient)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from ..errors import InputError, ModelError
from .job import IMAGE_LABEL, MASK_LABEL, check_scale
from .protocol import INPUT_IMAGE, INPUT_MASK, INPUT_SCALE, MODEL_NAME, OUTPUT, unwrap_error


def _host_port(url: str) -> str:
    """``http://HOST:PORT`` (or ``HOST:PORT``) -> ``HOST:PORT`` for tritonclient."""
    parsed = urlparse(url if "://" in url else f"http://{url}")
    if parsed.scheme != "http" or not parsed.hostname or parsed.path not in ("", "/"):
        raise InputError(f"--server must look like http://HOST:PORT (Triton's HTTP port), got {url!r}")
    return parsed.netloc


def inpaint_remote(url: str, image: bytes, mask: bytes, scale: float, timeout: float = 600.0,
                   image_name: str = IMAGE_LABEL, mask_name: str = MASK_LABEL, client=None) -> bytes:
    """Send one job to a running ``sair-serve`` at ``url``; the encoded PNG it returns.

    ``client``: a ``tritonclient.http.InferenceServerClient`` to reuse (one per thread: it is not
    thread-safe); by default one is opened and closed for this job.

    Errors the server reports come back as the same :class:`InputError`/:class:`ModelError` the
    local path raises, with ``image_name``/``mask_name`` (the user's paths) put back into them.
    """
    try:
        import tritonclient.http as httpclient
        from tritonclient.utils import InferenceServerException
    except ImportError:
        raise InputError("--server needs tritonclient: pip install 'sair-deploy[serve]'") from None
    check_scale(scale)
    address = _host_port(url)
    inputs = [httpclient.InferInput(INPUT_IMAGE, [1], "BYTES"), httpclient.InferInput(INPUT_MASK, [1], "BYTES"),
              httpclient.InferInput(INPUT_SCALE, [1], "FP32")]
    inputs[0].set_data_from_numpy(np.array([image], dtype=np.object_))
    inputs[1].set_data_from_numpy(np.array([mask], dtype=np.object_))
    inputs[2].set_data_from_numpy(np.array([scale], dtype=np.float32))
    try:
        own = client is None
        if own:
            client = httpclient.InferenceServerClient(address, network_timeout=timeout,
                                                      connection_timeout=min(timeout, 30.0))
        try:
            result = client.infer(MODEL_NAME, inputs, outputs=[httpclient.InferRequestedOutput(OUTPUT)])
        finally:
            if own:
                client.close()
    except InferenceServerException as exc:
        err = unwrap_error(exc.message() or "")
        if err is None:
            first = (exc.message() or str(exc)).strip().splitlines()
            raise ModelError(f"the server at {url} failed: {first[0][:200] if first else 'no message'}") from None
        raise type(err)(str(err).replace(IMAGE_LABEL, image_name).replace(MASK_LABEL, mask_name)) from None
    except (ConnectionError, OSError) as exc:
        raise InputError(f"cannot reach the server at {url}: {exc}") from None
    out = result.as_numpy(OUTPUT)
    if out is None or out.size != 1:
        raise ModelError(f"the server at {url} returned no '{OUTPUT}' output")
    value = out.reshape(-1)[0]
    return value if isinstance(value, bytes) else bytes(value)



def remote_inpaint_one(url: str, image_path: Path, mask_path: Path, out: Path, scale: float,
                       force: bool) -> str:
    """``sair-inpaint --server``: one image/mask pair through the server, written to ``out`` exactly
    as the local path writes it; returns the one-line report."""
    import io

    from PIL import Image

    from ..files import atomic_write
    from ..io import WRITABLE, save_image

    if out.exists() and not force:
        raise InputError(f"{out} already exists; pass --force to overwrite it")
    if out.suffix.lower() not in WRITABLE:
        save_image(out, np.zeros((1, 1, 3)), force)  # raises the local path's message
    png = inpaint_remote(url, _read_bytes(image_path, "image"), _read_bytes(mask_path, "mask"), scale,
                         image_name=str(image_path), mask_name=str(mask_path))
    with Image.open(io.BytesIO(png)) as im:
        width, height = im.size
        pixels = None if out.suffix.lower() == ".png" else np.asarray(im.convert("RGB"))
    if pixels is None:  # the server's PNG is byte for byte what the local path writes
        if not out.parent.exists():
            raise InputError(f"output folder {out.parent} does not exist")
        atomic_write(out, lambda tmp: Path(tmp).write_bytes(png))
    else:
        save_image(out, pixels.astype(np.float64) / 255.0, force)
    return f"wrote {out} ({width}x{height}, inpainted by {url})"


def _read_bytes(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise InputError(f"{what} {path} {'is not a file' if path.exists() else 'does not exist'}")
    return path.read_bytes()
