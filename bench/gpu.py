"""GPU speed of the device-resident runtime: torch CUDA float32 and float16 end to end.

    python bench/gpu.py                      # paper widths (sair-b16), random weights, 512/1024, scales 1, 2
    python bench/gpu.py --export DIR         # add ONNX Runtime CUDA (IO binding) for an export directory
    python bench/gpu.py --checkpoint CKPT --export DIR   # torch and ONNX Runtime on the same trained model

Prints a Markdown table: ms per image end to end (median of --repeat after a warm-up on the same
size), then a second, synchronised pass that attributes time to each graph (the stages), with the
graph calls, MB to and from the device and the host time outside the backend. Names the card.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from speed import photo, random_config


class _Synced:
    """Wraps a backend so that every graph call is synchronised and timed (the stage pass)."""

    def __init__(self, be, torch):
        self.be, self.torch, self.ms = be, torch, {}

    def __getattr__(self, name):
        return getattr(self.be, name)

    def _sync(self):
        if getattr(self.be, "device", None) is not None and str(self.be.device).startswith("cuda"):
            self.torch.cuda.synchronize()

    def run(self, graph, *inputs):
        self._sync()
        t = time.perf_counter()
        out = self.be.run(graph, *inputs)
        self._sync()
        self.ms[graph] = self.ms.get(graph, 0.0) + 1e3 * (time.perf_counter() - t)
        return out

    def run_into(self, graph, out, start, count, *inputs):
        self._sync()
        t = time.perf_counter()
        self.be.run_into(graph, out, start, count, *inputs)
        self._sync()
        self.ms[graph] = self.ms.get(graph, 0.0) + 1e3 * (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="sair-b16")
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0])
    ap.add_argument("--export", help="an export directory, to add ONNX Runtime CUDA rows")
    ap.add_argument("--checkpoint", help="the torch rows' model (default: --config, random weights)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of this script (tiny sizes)")
    ap.add_argument("--no-channels-first", action="store_true",
                    help="leave out the float16 row that turns the rows path off (fast.GPU_ROWS)")
    args = ap.parse_args()

    import torch

    from sair_deploy.backends.torch_backend import TorchBackend
    from sair_deploy.inpainter import Inpainter
    from sair_deploy.model import fast
    from sair_deploy.model.sair import SAIR

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py needs a CUDA GPU")
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    if args.checkpoint:
        from sair_deploy.model.checkpoint import load_checkpoint

        model = load_checkpoint(args.checkpoint).eval()
    else:
        model = SAIR(random_config(args.config)).eval()
    # (label, backend, rows path on): the channels-first turn is the previous design, for comparison
    backends = [(None, TorchBackend(model, args.device), True)]
    if args.device == "cuda":
        backends.append((None, TorchBackend(model, "cuda", fp16=True), True))
        if not args.no_channels_first:
            backends.append(("torch-cuda-fp16 channels-first", backends[-1][1], False))
    if args.export:
        from sair_deploy.api import load_backend
        try:
            backends.append((None, load_backend(args.export, "onnx", "cuda"), True))
        except Exception as exc:  # noqa: BLE001 - report and go on
            print(f"(onnx cuda: {exc})")
    card = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"{card}, torch {torch.__version__}, model {args.checkpoint or args.config + ' (random weights)'}\n")
    print("| input | scale | backend | ms / image | calls | MB to device | MB back | host glue ms | "
          "stages (ms, synchronised pass) |")
    print("|---|---|---|---|---|---|---|---|---|")
    last = {}
    for size in args.sizes:
        image, mask = photo(size)
        image = np.round(image * 255).astype(np.uint8)
        for scale in args.scales:
            for label, be, rows in backends:
                fast.GPU_ROWS = rows
                label = label or be.name
                inp = Inpainter(be)
                inp.set_image(image, mask)
                inp.inpaint(scale)  # warm-up at this size (cuDNN picks its kernels)
                times = []
                for _ in range(args.repeat):
                    sync()
                    t = time.perf_counter()
                    inp.set_image(image, mask)
                    inp.inpaint(scale)
                    sync()
                    times.append(time.perf_counter() - t)
                ms = 1e3 * float(np.median(times))
                st = inp.stats
                synced = _Synced(be, torch)
                sp = Inpainter(synced)
                sp.set_image(image, mask)
                sp.inpaint(scale)
                stages = ", ".join(f"{k} {v:.1f}" for k, v in synced.ms.items())
                print(f"| {size}² | {scale:g} | {label} | {ms:.1f} | {st['calls']} | "
                      f"{st['h2d_bytes'] / 1e6:.2f} | {st['d2h_bytes'] / 1e6:.2f} | {st['glue_ms']:.1f} | {stages} |",
                      flush=True)
                last[(size, scale, label)] = ms
    fast.GPU_ROWS = True
    key = lambda n: last.get((1024, 2.0, n), float("nan"))  # noqa: E731
    print(f"\ngpu_ms_1024_s2_fp32={key('torch-cuda'):.1f} gpu_ms_1024_s2_fp16={key('torch-cuda-fp16'):.1f} "
          f"gpu_ms_1024_s2_fp16_channels_first={key('torch-cuda-fp16 channels-first'):.1f}")


if __name__ == "__main__":
    main()
