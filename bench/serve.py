"""sair-serve against the same jobs run in-process: latency (p50/p99) and throughput.

    python bench/serve.py [--sizes 256 512] [--clients 1 2 4] [--requests 8] [--instances 1]

Needs the ``serve`` extra (numpy<2, so its own venv). Both sides run the bundled model on ONNX
Runtime (CPU) through the same job function (PNG bytes in, PNG bytes out) with the same number of
inpainters (``--instances``), so the difference is what Triton adds: HTTP, (de)serialisation, the
Python backend's shared-memory hop and scheduling. With C clients, C jobs are sent at once per
round; in-process and server rounds alternate.
"""

from __future__ import annotations

import argparse
import io
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def make_jobs(size: int, count: int, seed: int = 0) -> list[tuple[bytes, bytes]]:
    """``count`` (image PNG, mask PNG) pairs: the example photo at ``size``^2, random box holes (~15%)."""
    rng = np.random.default_rng(seed)
    photo = Image.open(ROOT / "examples" / "cat.png").convert("RGB").resize((size, size), Image.BICUBIC)
    buf = io.BytesIO()
    photo.save(buf, format="PNG")
    jobs = []
    for _ in range(count):
        mask = np.zeros((size, size), np.uint8)
        for _ in range(6):
            h, w = rng.integers(size // 16, size // 5, 2)
            y, x = rng.integers(0, size - h), rng.integers(0, size - w)
            mask[y:y + h, x:x + w] = 255
        m = io.BytesIO()
        Image.fromarray(mask).save(m, format="PNG")
        jobs.append((buf.getvalue(), m.getvalue()))
    return jobs


def run_clients(call, jobs: list, clients: int) -> tuple[list[float], float]:
    """``clients`` threads send one job each at once; their latencies (ms) and the wall time (s)."""
    lat: list[float] = []

    def client(job) -> None:
        t = time.perf_counter()
        call(*job)
        lat.append((time.perf_counter() - t) * 1000)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client, job) for job in jobs]:
            f.result()
    return lat, time.perf_counter() - start


def interleaved(local, remote, jobs: list, clients: int) -> dict[str, tuple[np.ndarray, float]]:
    """Rounds of ``clients`` concurrent jobs, alternating in-process and server rounds, so both
    see the same machine load (this machine is shared); latencies and summed wall time per side."""
    out = {"local": ([], 0.0), "server": ([], 0.0)}
    for r in range(0, len(jobs), clients):
        for side, call in (("local", local), ("server", remote)) if r % 2 == 0 else \
                (("server", remote), ("local", local)):
            lat, wall = run_clients(call, jobs[r:r + clients], clients)
            out[side] = (out[side][0] + lat, out[side][1] + wall)
    return {k: (np.array(v[0]), v[1]) for k, v in out.items()}


_local = threading.local()


def _client(url: str):
    """This thread's HTTP client (tritonclient's is not thread-safe), kept open like a real client's."""
    import tritonclient.http as httpclient

    if getattr(_local, "url", None) != url:
        _local.client, _local.url = httpclient.InferenceServerClient(url.split("://")[1]), url
    return _local.client


def start_server(instances: int) -> tuple[subprocess.Popen, str]:
    """``sair-serve`` on free loopback ports; returns once the model is ready."""
    import tritonclient.http as httpclient

    socks = [socket.socket() for _ in range(3)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    http, grpc, metrics = (s.getsockname()[1] for s in socks)
    for s in socks:
        s.close()
    proc = subprocess.Popen([sys.executable, "-m", "sair_deploy.serve.server", "--backend", "onnx",
                             "--device", "cpu", "--instances", str(instances), "--http-port", str(http),
                             "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{http}")
    while True:
        if proc.poll() is not None:
            raise SystemExit("sair-serve did not start")
        try:
            if client.is_model_ready("sair_inpaint"):
                client.close()
                return proc, f"http://127.0.0.1:{http}"
        except Exception:  # noqa: BLE001 - not listening yet
            pass
        time.sleep(0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[256, 512])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--requests", type=int, default=8, help="requests per client (= rounds per side)")
    ap.add_argument("--instances", type=int, default=1, help="server instances = in-process inpainters")
    ap.add_argument("--overhead", type=int, default=0, metavar="N",
                    help="also N one-client 512² jobs with an empty mask (decode + PNG encode, no "
                         "inference): the server's own cost per request, free of inference-time noise")
    args = ap.parse_args()

    from sair_deploy.api import load_inpainter
    from sair_deploy.serve.client import inpaint_remote
    from sair_deploy.serve.job import run_job

    # In-process "server": one worker thread per instance, each with its own inpainter, taking jobs
    # from one FIFO queue, as Triton's instances take requests.
    held = threading.local()

    def work(image: bytes, mask: bytes) -> bytes:
        if not hasattr(held, "inpainter"):
            held.inpainter = load_inpainter(None, backend="onnx", device="cpu")
        return run_job(held.inpainter, image, mask, 1.0).png

    workers = ThreadPoolExecutor(args.instances)
    for f in [workers.submit(work, *make_jobs(64, 1)[0]) for _ in range(args.instances)]:
        f.result()  # load the inpainters before timing

    def local(image: bytes, mask: bytes) -> bytes:
        return workers.submit(work, image, mask).result()

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the server on SIGTERM too
    proc, url = start_server(args.instances)
    overhead = ""
    try:
        rows = []
        for size in args.sizes:
            for clients in args.clients:
                jobs = make_jobs(size, clients * args.requests, seed=size + clients)
                local(*jobs[0]), inpaint_remote(url, *jobs[0], 1.0)  # warm-up, not timed
                res = interleaved(local, lambda i, m: inpaint_remote(url, i, m, 1.0, client=_client(url)),
                                  jobs, clients)
                (lat_l, wall_l), (lat_s, wall_s) = res["local"], res["server"]
                lp50, lp99 = np.percentile(lat_l, [50, 99])
                sp50, sp99 = np.percentile(lat_s, [50, 99])
                rows.append(f"| {size}² | {clients} | {lp50:.0f} / {lp99:.0f} | {len(jobs) / wall_l:.2f} | "
                            f"{sp50:.0f} / {sp99:.0f} | {len(jobs) / wall_s:.2f} | {sp50 - lp50:+.0f} "
                            f"({(sp50 / lp50 - 1) * 100:+.1f}%) |")
                print(rows[-1], file=sys.stderr, flush=True)
        if args.overhead:
            image = make_jobs(512, 1)[0][0]
            empty = io.BytesIO()
            Image.new("L", (512, 512)).save(empty, format="PNG")
            jobs = [(image, empty.getvalue())] * args.overhead
            res = interleaved(local, lambda i, m: inpaint_remote(url, i, m, 1.0, client=_client(url)), jobs, 1)
            lp50, sp50 = (float(np.percentile(res[k][0], 50)) for k in ("local", "server"))
            overhead = (f"\nempty-mask 512² jobs ({args.overhead}, one client): in-process p50 {lp50:.1f} ms, "
                        f"server p50 {sp50:.1f} ms, server's own cost {sp50 - lp50:.1f} ms per request")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    print(f"\n{args.instances} instance(s), {args.requests} requests per client, scale 1, bundled model, "
          f"ONNX Runtime CPU\n")
    print("| input | clients | in-process p50 / p99 ms | in-process req/s | server p50 / p99 ms | "
          "server req/s | server overhead p50 ms |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(overhead)


if __name__ == "__main__":
    main()
