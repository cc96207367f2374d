"""sair-serve on loopback: a real Triton server (PyTriton), started on free ports, stopped with SIGTERM.

Needs the ``serve`` extra, which pins numpy<2; CI runs this file in its own venv (``.ci/run``).
"""

from __future__ import annotations

import importlib.util
import io
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from sair_deploy.cli import cli

ROOT = Path(__file__).resolve().parents[1]
CAT, CAT_MASK = ROOT / "examples" / "cat.png", ROOT / "examples" / "cat_mask.png"

_missing = [m for m in ("pytriton", "tritonclient") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(
    bool(_missing) or int(np.__version__.split(".")[0]) >= 2,
    reason=f"needs the serve extra ({', '.join(_missing) or 'numpy<2'}); .ci/run runs it in its serve venv")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(_children(p))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _rss_mb(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class Server:
    """A running ``sair-serve``: its process, URL and ports."""

    def __init__(self, *args: str):
        self.http, self.grpc, self.metrics = _free_ports(3)
        self.url = f"http://127.0.0.1:{self.http}"
        cmd = [sys.executable, "-m", "sair_deploy.serve.server", "--backend", "onnx", "--http-port",
               str(self.http), "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics), *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        import tritonclient.http as httpclient

        self.client = httpclient.InferenceServerClient(f"127.0.0.1:{self.http}")
        self._local, self._clients = threading.local(), [self.client]
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sair-serve exited: {self.proc.stderr.read()}")
            try:
                if self.client.is_model_ready("sair_inpaint"):
                    break
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("sair-serve was not ready within 180 s")
            time.sleep(0.5)

    def infer(self, image: bytes, mask: bytes, scale: float) -> bytes:
        """One request on this thread's own client (tritonclient's HTTP client is not thread-safe)."""
        import tritonclient.http as httpclient

        if not hasattr(self._local, "client"):
            self._local.client = httpclient.InferenceServerClient(f"127.0.0.1:{self.http}")
            self._clients.append(self._local.client)
        ins = [httpclient.InferInput("image", [1], "BYTES"), httpclient.InferInput("mask", [1], "BYTES"),
               httpclient.InferInput("scale", [1], "FP32")]
        ins[0].set_data_from_numpy(np.array([image], dtype=np.object_))
        ins[1].set_data_from_numpy(np.array([mask], dtype=np.object_))
        ins[2].set_data_from_numpy(np.array([scale], dtype=np.float32))
        return self._local.client.infer("sair_inpaint", ins).as_numpy("inpainted").reshape(-1)[0]

    def stop(self) -> list[int]:
        """SIGTERM, wait; the processes of the tree that are still alive afterwards."""
        tree = _tree(self.proc.pid)
        for client in self._clients:  # an idle keep-alive connection would hold Triton's exit for its timeout
            client.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in tree) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [p for p in tree if _alive(p)]
        for p in left:  # never leave a test's server behind, even when the test fails
            os.kill(p, signal.SIGKILL)
        return left


@pytest.fixture(scope="module")
def server():
    srv = Server("--max-request-mb", "1", "--max-megapixels", "4")
    yield srv
    assert srv.stop() == [], "processes left after SIGTERM"
    assert srv.proc.returncode == 0, srv.proc.stderr.read()


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _run_cli(*args) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_server_output_is_byte_identical_to_sair_inpaint(server, tmp_path, scale):
    local, remote = tmp_path / "local.png", tmp_path / "remote.png"
    code, out = _run_cli(CAT, CAT_MASK, "-o", local, "--scale", scale, "--backend", "onnx", "-q")
    assert code == 0, out
    code, out = _run_cli(CAT, CAT_MASK, "-o", remote, "--scale", scale, "--server", server.url)
    assert code == 0, out
    assert remote.read_bytes() == local.read_bytes()
    assert server.infer(CAT.read_bytes(), CAT_MASK.read_bytes(), scale) == local.read_bytes()


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, Path, list]]:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(CAT.read_bytes()[:300])
    wide = tmp_path / "wide_mask.png"
    Image.new("L", (300, 100)).save(wide)
    full = tmp_path / "full_mask.png"
    Image.new("L", (320, 212), 255).save(full)
    return {"corrupt image": (corrupt, CAT_MASK, []), "mask of another aspect ratio": (CAT, wide, []),
            "full mask": (CAT, full, [])}


@pytest.mark.parametrize("kind", ["corrupt image", pytest.param("mask of another aspect ratio", marks=pytest.mark.slow),
                                  pytest.param("full mask", marks=pytest.mark.slow)])
def test_bad_request_same_message_and_exit_code_as_local_then_serving_goes_on(server, tmp_path, kind):
    image, mask, extra = _bad_files(tmp_path)[kind]
    local = _run_cli(image, mask, "-o", tmp_path / "a.png", "--backend", "onnx", "-q", *extra)
    remote = _run_cli(image, mask, "-o", tmp_path / "b.png", "--server", server.url, *extra)
    assert local[0] == remote[0] == 2
    assert remote[1] == local[1] and remote[1].startswith("error: ") and remote[1].count("\n") == 1
    assert server.infer(CAT.read_bytes(), CAT_MASK.read_bytes(), 1.0)[:8] == b"\x89PNG\r\n\x1a\n"


def _server_error(server, image: bytes, mask: bytes, scale: float) -> str:
    from tritonclient.utils import InferenceServerException

    from sair_deploy.serve.protocol import unwrap_error

    with pytest.raises(InferenceServerException) as info:
        server.infer(image, mask, scale)
    err = unwrap_error(info.value.message())
    assert err is not None, info.value.message()
    return str(err)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` but carries almost no pixel data (a bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


@pytest.mark.slow
def test_each_bad_request_kind_is_refused_and_serving_goes_on(server):
    cat, mask = CAT.read_bytes(), CAT_MASK.read_bytes()
    rss0 = _rss_mb(_tree(server.proc.pid))
    cases = {
        "scale out of range": ((cat, mask, 0.5), "--scale must be a number >= 1, got 0.5"),
        "output too large": ((cat, mask, 8.0), "output 2560x1696 is too large (over 4.0 megapixels)"),
        "corrupt image": ((cat[:300], mask, 1.0), "cannot read image input 'image'"),
        "decompression bomb": ((_png_header_only(50000, 50000), mask, 1.0),
                               "image input 'image' is too large to open safely"),
        "too many pixels": ((_png(np.zeros((1000, 16000), np.uint8)), mask, 1.0),
                            "image input 'image' is 16000x1000 (16.0 megapixels)"),
        "oversized body": ((os.urandom(1_200_000), mask, 1.0), "request carries 1200804 bytes of images; "
                                                              "this server accepts at most 1048576"),
    }
    for kind, (request, expected) in cases.items():
        assert expected in _server_error(server, *request), kind
        assert server.infer(cat, mask, 1.0)[:4] == b"\x89PNG", kind
    # refused without decoding: a decoded 16000x1000 image would add > 100 MB (float32 RGB)
    assert _rss_mb(_tree(server.proc.pid)) - rss0 < 60


def test_default_host_listens_on_loopback_only(server):
    ports = {server.http, server.grpc, server.metrics}
    listening = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, port = local.split(":")
            if state == "0A" and int(port, 16) in ports:  # 0A = LISTEN
                listening.setdefault(int(port, 16), []).append(addr)
    assert set(listening) == ports, listening
    loopback = {"0100007F", "00000000000000000000000001000000",  # 127.0.0.1, ::1,
                "0000000000000000FFFF00000100007F"}  # ::ffff:127.0.0.1 (gRPC's dual-stack socket)
    assert all(a in loopback for addrs in listening.values() for a in addrs), listening
    others = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)} - {"127.0.0.1"}
    for ip in others:  # an interface address, when the machine has one, is refused
        with socket.socket() as s, pytest.raises(OSError):
            s.settimeout(2)
            s.connect((ip, server.http))


@pytest.mark.slow
def test_load_four_clients_25_requests_each(server):
    rng = np.random.default_rng(0)
    jobs = []
    for i in range(100):
        image = (rng.random((256, 256, 3)) * 255).astype(np.uint8)
        mask = np.zeros((256, 256), np.uint8)
        for _ in range(4):
            y, x = rng.integers(0, 224, 2)
            mask[y:y + rng.integers(8, 32), x:x + rng.integers(8, 32)] = 255
        jobs.append((_png(image), _png(mask)))
    pids = _tree(server.proc.pid)
    latencies, rss = [], {}

    def client(k: int) -> None:
        for i in range(25):
            t = time.perf_counter()
            out = server.infer(*jobs[k * 25 + i], 1.0)
            latencies.append(time.perf_counter() - t)
            assert out[:4] == b"\x89PNG"
            if len(latencies) == 10 and "after 10" not in rss:
                rss["after 10"] = _rss_mb(pids)

    start = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        for f in [pool.submit(client, k) for k in range(4)]:
            f.result()  # zero errors: any failed request raises here
    wall = time.perf_counter() - start
    rss["end"] = _rss_mb(pids)
    p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
    print(f"\nload: 4 clients x 25 requests, 256x256: p50 {p50:.0f} ms, p99 {p99:.0f} ms, "
          f"{len(latencies) / wall:.2f} req/s; server RSS {rss['after 10']:.0f} MB after 10, "
          f"{rss['end']:.0f} MB after 100")
    assert len(latencies) == 100
    assert rss["end"] <= 1.1 * rss["after 10"]
