"""The job function both sair-serve and sair-inpaint use (no server needed: base install only)."""

from __future__ import annotations

import io
import struct
import sysconfig
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from sair_deploy import api
from sair_deploy.cli import cli
from sair_deploy.errors import InputError, ModelError
from sair_deploy.serve.job import Limits, encode_png, run_job, to_uint8
from sair_deploy.serve.protocol import unwrap_error, wrap_error
from sair_deploy.serve.server import python_library_env

ROOT = Path(__file__).resolve().parents[1]
CAT, CAT_MASK = ROOT / "examples" / "cat.png", ROOT / "examples" / "cat_mask.png"


@pytest.fixture(scope="module")
def onnx_inpainter():
    return api.load_inpainter(None, backend="onnx", device="cpu")


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_job_png_is_byte_identical_to_sair_inpaint(onnx_inpainter, tmp_path, scale):
    out = tmp_path / "cli.png"
    result = CliRunner().invoke(cli, [str(CAT), str(CAT_MASK), "-o", str(out), "--scale", str(scale),
                                      "--backend", "onnx", "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    job = run_job(onnx_inpainter, CAT.read_bytes(), CAT_MASK.read_bytes(), scale)
    assert job.png == out.read_bytes()
    assert (job.width, job.height) == (round(320 * scale), round(212 * scale))


def test_to_uint8_accepts_float_or_uint8():
    a = np.random.default_rng(0).random((5, 7, 3)).astype(np.float32)
    u = to_uint8(a)
    assert u.dtype == np.uint8 and to_uint8(u) is u
    assert encode_png(a) == encode_png(u)


def _header_only_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


class _MustNotRun:
    """An inpainter that fails the test if a refused request reaches it."""

    def set_image(self, *_):
        raise AssertionError("a refused request reached the inpainter")

    inpaint = set_image


@pytest.mark.parametrize("image, scale, limits, message", [
    (_header_only_png(50000, 50000), 1.0, Limits(), "image input 'image' is too large to open safely"),
    (_header_only_png(4000, 3000), 1.0, Limits(max_input_pixels=10**6),
     "image input 'image' is 4000x3000 (12.0 megapixels); this server accepts at most 1.0"),
    (CAT.read_bytes(), 10.0, Limits(max_output_pixels=10**6), "output 3200x2120 is too large (over 1.0"),
    (CAT.read_bytes(), 0.5, Limits(), "--scale must be a number >= 1, got 0.5"),
    (CAT.read_bytes(), 1.0, Limits(max_request_bytes=1000), "request carries 119065 bytes of images"),
])
def test_limits_refuse_before_decoding(image, scale, limits, message):
    # the 4000x3000 and 50000x50000 headers carry no pixel data: decoding them would fail differently
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_job(_MustNotRun(), image, CAT_MASK.read_bytes(), scale, limits)


def test_request_errors_name_the_inputs_like_the_cli_names_paths(onnx_inpainter):
    full = io.BytesIO()
    Image.new("L", (320, 212), 255).save(full, format="PNG")
    with pytest.raises(InputError, match="^mask input 'mask' covers the whole image"):
        run_job(onnx_inpainter, CAT.read_bytes(), full.getvalue(), 1.0)
    with pytest.raises(InputError, match="^cannot read image input 'image': not an image"):
        run_job(onnx_inpainter, b"not a picture", CAT_MASK.read_bytes(), 1.0)


def test_errors_travel_inside_triton_text():
    text = "Traceback ...\n" + wrap_error(InputError("mask input 'mask' is 3x1 but ...")) + "\n"
    err = unwrap_error(text)
    assert isinstance(err, InputError) and str(err) == "mask input 'mask' is 3x1 but ..."
    assert isinstance(unwrap_error(wrap_error(ModelError("bad"))), ModelError)
    assert unwrap_error("Stub process is not healthy") is None


def test_python_backend_stub_gets_this_interpreters_libpython():
    env = python_library_env({"LD_LIBRARY_PATH": "/opt/x:/usr/lib"})
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        assert env["LD_LIBRARY_PATH"].split(":") == [sysconfig.get_config_var("LIBDIR"), "/opt/x", "/usr/lib"]
    else:  # a static interpreter: the stub cannot share its libpython, nothing to point at
        assert env["LD_LIBRARY_PATH"] == "/opt/x:/usr/lib"


def test_taken_port_is_refused_with_one_line_before_triton_starts():
    import socket

    from sair_deploy.serve.server import check_ports_free

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(InputError, match=rf"^cannot listen on 127.0.0.1:{port} \(--grpc-port\): "):
            check_ports_free("127.0.0.1", {"--grpc-port": port})
