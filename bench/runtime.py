"""What the runtime itself costs: graph calls, bytes to and from the device, host time.

    python bench/runtime.py                    # sair-b16, 512/1024/2048, scales 1 (30% holes) and 2

Runs the real :class:`~sair_deploy.inpainter.Inpainter` over a zero-cost stand-in backend: the
torch backend on the ``meta`` device, which runs every graph's shape logic but no arithmetic and
keeps every result as a device handle. The counting is exact (the same backend code moves the
same bytes); only the arithmetic is skipped, so "host glue" is the runtime's own work outside the
backend. Two configurations: a GPU backend's (whole-tile query calls) and the CPU backends'
(cache-sized query calls of 1024). Bytes are measured against what the user hands over (the
8-bit image and the boolean mask) and what comes back (the 8-bit result); MB = 10^6 bytes.
Prints a Markdown table and a last line
``calls_1024_s2=<n> h2d_mb_1024_s2=<x> d2h_mb_1024_s2=<x> glue_ms_1024_s2=<x>`` (GPU configuration).
"""

from __future__ import annotations

import argparse

import numpy as np

from speed import photo, random_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="sair-b16")
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cpu-max-size", type=int, default=1024,
                    help="largest size for the CPU configuration (its many small calls are slow to "
                         "count on the stand-in)")
    args = ap.parse_args()

    import torch

    from sair_deploy.backends.base import CPU_QUERY_CHUNK, GPU_QUERY_CHUNK
    from sair_deploy.backends.torch_backend import TorchBackend
    from sair_deploy.inpainter import Inpainter
    from sair_deploy.model.sair import SAIR

    torch.set_num_threads(args.threads)
    cfg = random_config(args.config)
    backend = TorchBackend(SAIR(cfg), device="meta")
    print(f"config {args.config}, stand-in backend (torch meta device), {args.threads} threads\n")
    print("| input | scale | configuration | graph calls | MB to device | × given | MB back | × output "
          "| host glue ms | calls by graph |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    last = {}
    for size in args.sizes:
        image, mask = photo(size)
        image = np.round(image * 255).astype(np.uint8)
        given = image.nbytes + mask.nbytes
        for scale in (1.0, 2.0):
            for conf, chunk in (("GPU", GPU_QUERY_CHUNK), ("CPU", CPU_QUERY_CHUNK)):
                if conf == "CPU" and size > args.cpu_max_size:
                    continue
                backend.query_chunk = chunk
                inp = Inpainter(backend)
                inp.set_image(image, mask)
                out = inp.inpaint(scale)
                st = inp.stats
                graphs = ", ".join(f"{k} {v}" for k, v in st["graphs"].items())
                print(f"| {size}² | {scale:g} | {conf} | {st['calls']} | {st['h2d_bytes'] / 1e6:.2f} | "
                      f"{st['h2d_bytes'] / given:.2f} | {st['d2h_bytes'] / 1e6:.2f} | "
                      f"{st['d2h_bytes'] / out.nbytes:.2f} | {st['glue_ms']:.1f} | {graphs} |", flush=True)
                if conf == "GPU":
                    last[(size, scale)] = st
    st = last.get((1024, 2.0))
    if st:
        print(f"\ncalls_1024_s2={st['calls']} h2d_mb_1024_s2={st['h2d_bytes'] / 1e6:.2f} "
              f"d2h_mb_1024_s2={st['d2h_bytes'] / 1e6:.2f} glue_ms_1024_s2={st['glue_ms']:.1f}")


if __name__ == "__main__":
    main()
