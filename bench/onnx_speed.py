"""End-to-end speed of the torch fast path vs ONNX Runtime (float32, float16) on the CPU.

Exports ``--config`` with random weights (or uses ``--checkpoint``/``--export``), then times
``set_image + inpaint(scale)`` through the same :class:`~sair_deploy.inpainter.Inpainter` for each
backend on square photos with ~30% holes, and prints a Markdown table (best of ``--repeat``).

    python bench/onnx_speed.py --config sair-small --sizes 256 512 --threads 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="sair-small")
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--export", type=Path, help="an existing sair-export directory of the checkpoint")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    import torch

    from sair_deploy.backends.onnx_backend import OnnxBackend
    from sair_deploy.backends.torch_backend import TorchBackend
    from sair_deploy.inpainter import Inpainter
    from sair_deploy.model.checkpoint import load_checkpoint, save_checkpoint
    from sair_deploy.model.config import get_config
    from sair_deploy.model.sair import SAIR
    from sair_export.pipeline import export_checkpoint

    sys.path.insert(0, str(Path(__file__).parent))
    from speed import photo

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="sair-bench-"))
    ckpt = args.checkpoint
    if ckpt is None:
        torch.manual_seed(0)
        ckpt = tmp / "model.safetensors"
        save_checkpoint(SAIR(get_config(args.config)).eval(), ckpt)
    export = args.export
    if export is None:
        export = tmp / "export"
        export_checkpoint(ckpt, export, fp16=True, log=lambda s: None)
    backends = {
        "torch fp32": TorchBackend(load_checkpoint(ckpt)),
        "ORT CPU fp32": OnnxBackend(export, device="cpu", precision="fp32", threads=args.threads),
        "ORT CPU fp16": OnnxBackend(export, device="cpu", precision="fp16", threads=args.threads),
    }
    names = list(backends)
    print(f"| size | scale | {' | '.join(n + ' ms' for n in names)} | torch / ORT fp32 |")
    print("|---|---|" + "---|" * (len(names) + 1))
    for size in args.sizes:
        image, mask = photo(size)
        for scale in args.scales:
            ms = {}
            for name, b in backends.items():
                best = float("inf")
                for _ in range(args.repeat):
                    inp = Inpainter(b)
                    t = time.perf_counter()
                    inp.set_image(image, mask)
                    inp.inpaint(scale)
                    best = min(best, time.perf_counter() - t)
                ms[name] = best * 1e3
            ratio = ms["torch fp32"] / ms["ORT CPU fp32"]
            cells = " | ".join(f"{ms[n]:.0f}" for n in names)
            print(f"| {size} | {scale:g} | {cells} | {ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
