"""End-to-end speed of the torch fast path vs ONNX Runtime (float32, float16, int8) on the CPU.

Exports ``--config`` with random weights (or uses ``--checkpoint``/``--export``), then times
``set_image + inpaint(scale)`` through the same :class:`~sair_deploy.inpainter.Inpainter` for each
backend on square photos with ~30% holes, and prints a Markdown table (best of ``--repeat``).

    python bench/onnx_speed.py --config sair-small --sizes 256 512 --threads 2
    python bench/onnx_speed.py --checkpoint sair_deploy/assets/sair-small-demo.safetensors \
        --export sair_deploy/assets/sair-small-demo-onnx --int8-variants --repeat 3

``--int8-variants`` adds int8 graphs to a copy of the export twice -- the query graph statically
(QDQ) or dynamically quantized, the other graphs static in both -- and times both. Variants run
interleaved (each repeat runs every variant once); the table gives medians and the last column
the spread (max/min) over repeats, a measure of how noisy the machine was.
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
    ap.add_argument("--int8-variants", action="store_true",
                    help="also time int8 graphs, static vs dynamic query quantization")
    args = ap.parse_args()

    import numpy as np
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
    }
    if args.export is None:
        backends["ORT CPU fp16"] = OnnxBackend(export, device="cpu", precision="fp16", threads=args.threads)
    if args.int8_variants:
        import shutil

        from sair_deploy import manifest as mf
        from sair_deploy.model.config import SAIRConfig
        from sair_export.quantize import write_int8_graphs

        for mode in ("static", "dynamic"):
            copy = tmp / f"int8-{mode}"
            shutil.copytree(export, copy)
            m = mf.load_manifest(copy)
            files = write_int8_graphs(copy, m["graphs"], SAIRConfig.from_dict(m["config"]),
                                      query_mode=mode, log=lambda s: None)
            for name, f in files.items():
                m["graphs"][name]["files"]["int8"] = f
            mf.write_manifest(copy, m)
            backends[f"ORT int8 ({mode} query)"] = OnnxBackend(copy, device="cpu", precision="int8",
                                                               threads=args.threads)
    names = list(backends)
    print(f"| size | scale | {' | '.join(n + ' ms' for n in names)} | torch / ORT fp32 | spread |")
    print("|---|---|" + "---|" * (len(names) + 2))
    for size in args.sizes:
        image, mask = photo(size)
        for scale in args.scales:
            runs: dict[str, list[float]] = {n: [] for n in names}
            for rep in range(args.repeat):  # interleaved: load from elsewhere hits every variant
                for name in (names if rep % 2 == 0 else names[::-1]):
                    inp = Inpainter(backends[name])
                    t = time.perf_counter()
                    inp.set_image(image, mask)
                    inp.inpaint(scale)
                    runs[name].append((time.perf_counter() - t) * 1e3)
            ms = {n: float(np.median(v)) for n, v in runs.items()}
            spread = max(max(v) / min(v) for v in runs.values())
            ratio = ms["torch fp32"] / ms["ORT CPU fp32"]
            cells = " | ".join(f"{ms[n]:.0f}" for n in names)
            print(f"| {size} | {scale:g} | {cells} | {ratio:.2f} | {spread:.2f} |", flush=True)


if __name__ == "__main__":
    main()
