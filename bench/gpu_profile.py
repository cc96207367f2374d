"""Where a GPU image's time goes: the torch profiler over one image, kernels by device time.

    python bench/gpu_profile.py                  # sair-b16, random weights, 1024², scale 2, float16

Prints the end-to-end time for a few rows-path piece sizes (``fast.GPU_QUERY_PIECE``), then a
table of the operators of one profiled image sorted by their own device time, each graph call
marked with ``record_function`` (so the graph rows give each stage's total). ``--device cpu`` is a
dry run of this script (tiny sizes, CPU time).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from speed import photo, random_config


class _Marked:
    """Wraps a backend so that every graph call is a named range in the profile."""

    def __init__(self, be, torch):
        self.be, self.torch = be, torch

    def __getattr__(self, name):
        return getattr(self.be, name)

    def run(self, graph, *inputs):
        with self.torch.profiler.record_function(f"graph:{graph}"):
            return self.be.run(graph, *inputs)

    def run_into(self, graph, out, start, count, *inputs):
        with self.torch.profiler.record_function(f"graph:{graph}"):
            self.be.run_into(graph, out, start, count, *inputs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="sair-b16")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--scale", type=float, default=2.0)
    ap.add_argument("--precision", default="fp16", choices=["fp32", "fp16"])
    ap.add_argument("--pieces", type=int, nargs="*", default=[1 << 16, 1 << 18, 1 << 20])
    ap.add_argument("--rows", type=int, default=30, help="operators in the table")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--compile", action="store_true",
                    help="last, time the image with the query and tile graphs under torch.compile")
    args = ap.parse_args()

    import torch

    from sair_deploy.backends.torch_backend import TorchBackend
    from sair_deploy.inpainter import Inpainter
    from sair_deploy.model import fast
    from sair_deploy.model.sair import SAIR

    cuda = args.device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    model = SAIR(random_config(args.config)).eval()
    be = TorchBackend(model, args.device, precision=args.precision if cuda else "fp32")
    image, mask = photo(args.size)
    image = np.round(image * 255).astype(np.uint8)
    print(f"{torch.cuda.get_device_name() if cuda else 'CPU'}, torch {torch.__version__}, {args.config}, "
          f"{args.size}², scale {args.scale:g}, {be.name}\n")

    def once(inp):
        inp.set_image(image, mask)
        return inp.inpaint(args.scale)

    def median_ms(inp, n=5):
        times = []
        for _ in range(n):
            sync()
            t = time.perf_counter()
            once(inp)
            sync()
            times.append(1e3 * (time.perf_counter() - t))
        return float(np.median(times))

    default_piece = fast.GPU_QUERY_PIECE
    print("| GPU_QUERY_PIECE | ms / image (median of 5) |\n|---|---|")
    for piece in args.pieces:
        fast.GPU_QUERY_PIECE = piece
        inp = Inpainter(be)
        once(inp)
        print(f"| {piece} | {median_ms(inp):.1f} |", flush=True)
    fast.GPU_QUERY_PIECE = default_piece

    inp = Inpainter(_Marked(be, torch))
    once(inp)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        once(inp)
        sync()
    events = prof.key_averages()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    try:
        table = events.table(sort_by=key, row_limit=args.rows, max_name_column_width=60)
    except (AttributeError, KeyError):
        table = events.table(sort_by="self_device_time_total", row_limit=args.rows, max_name_column_width=60)
    print(f"\nhost glue of the profiled image: {inp.stats['glue_ms']:.1f} ms\n")
    print(table, flush=True)

    if args.compile:  # an experiment: what a fused query/tile would buy (compile time reported)
        inp = Inpainter(be)
        t = time.perf_counter()
        try:
            for name in ("query", "tile"):
                be.graphs[name] = torch.compile(be.graphs[name], dynamic=True)
            once(inp)
            sync()
            compile_s = time.perf_counter() - t
            print(f"\ntorch.compile (query, tile): first image {compile_s:.1f} s, then "
                  f"{median_ms(inp):.1f} ms / image (median of 5)")
        except Exception as exc:  # noqa: BLE001 - an experiment: report and stop
            print(f"\ntorch.compile failed after {time.perf_counter() - t:.1f} s: {type(exc).__name__}: "
                  f"{str(exc).splitlines()[0][:300]}")


if __name__ == "__main__":
    main()
