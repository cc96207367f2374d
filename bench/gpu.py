"""GPU throughput of the fast path: torch float32 and float16 (and exported backends if given).

    python bench/gpu.py                          # paper widths, random weights, 512 and 1024, scale 2
    python bench/gpu.py --export DIR             # add ONNX Runtime CUDA / TensorRT for an export dir

Prints a Markdown table (ms per image end to end, output megapixels/s) and, per backend, the
largest difference to torch float32 on the same image.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from speed import photo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="sair-b16")
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--scale", type=float, default=2.0)
    ap.add_argument("--export", help="an export directory, to add ONNX Runtime / TensorRT rows")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import torch

    from sair_deploy.backends.torch_backend import TorchBackend
    from sair_deploy.inpainter import Inpainter
    from sair_deploy.model.config import get_config
    from sair_deploy.model.sair import SAIR

    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py needs a CUDA GPU")
    torch.manual_seed(0)
    cfg = get_config(args.config)
    cfg = cfg.replace(semantic=type(cfg.semantic)(**{**cfg.semantic.__dict__, "pretrained": None}))
    model = SAIR(cfg).eval()
    backends = [TorchBackend(model, "cuda"), TorchBackend(model, "cuda", fp16=True)]
    if args.export:
        from sair_deploy.api import load_backend
        for kind in ("onnx", "trt"):
            try:
                backends.append(load_backend(args.export, kind, "cuda"))
            except Exception as exc:  # noqa: BLE001 - report and go on
                print(f"({kind}: {exc})")
    print(f"{torch.cuda.get_device_name()}, config {args.config}, scale {args.scale:g}\n")
    print("| input | backend | ms / image | output MP/s | max abs diff vs torch fp32 |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        image, mask = photo(size)
        ref = None
        for be in backends:
            inp = Inpainter(be, chunk=65536, block=128)
            inp.set_image(image[:64, :64], mask[:64, :64])  # warm-up
            inp.inpaint(args.scale)
            times = []
            for _ in range(args.repeat):
                torch.cuda.synchronize()
                t = time.perf_counter()
                inp.set_image(image, mask)
                out = inp.inpaint(args.scale)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
            ms = 1e3 * float(np.median(times))
            ref = out if ref is None else ref
            mp = out.shape[0] * out.shape[1] / 1e6
            print(f"| {size}² | {be.name} | {ms:.0f} | {mp / ms * 1e3:.1f} | {np.abs(out - ref).max():.2e} |")


if __name__ == "__main__":
    main()
