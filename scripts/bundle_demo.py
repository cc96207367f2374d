"""Make a checkpoint the bundled demo model: float16 weights + its float32 ONNX export.

    python scripts/bundle_demo.py runs/demo/model.safetensors --trained "what, how long, where"

Writes ``sair_deploy/assets/sair-small-demo.safetensors`` (weights stored as float16: half the
size; the runtime computes in float32) and exports that very file to
``sair_deploy/assets/sair-small-demo-onnx`` with ``sair-export --int8 --int8-query float --gate --check`` (int8
graphs calibrated on training photos; the int8 and bf16 accuracy gates measured on the held-out
crops of ``scripts/make_sample_data.py``), so the two bundled forms hold the same numbers. Needs
``--force`` to replace an existing bundle.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "sair_deploy" / "assets"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--trained", required=True, help="How it was trained (stored in the metadata).")
    ap.add_argument("--force", action="store_true", help="Replace the current bundle.")
    args = ap.parse_args()

    from safetensors import safe_open
    from safetensors.torch import save_file

    from sair_deploy.files import atomic_write
    from sair_deploy.model.checkpoint import read_metadata
    from sair_export.pipeline import export_checkpoint, run_checks

    out = ASSETS / "sair-small-demo.safetensors"
    export_dir = ASSETS / "sair-small-demo-onnx"
    if out.exists() and not args.force:
        sys.exit(f"error: {out} exists; pass --force to replace the bundled model")
    meta = dict(read_metadata(args.checkpoint))  # validates the checkpoint
    with safe_open(str(args.checkpoint), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    meta.update(weights_dtype="float16", trained=args.trained)
    atomic_write(out, lambda tmp: save_file(state, tmp, metadata=meta))
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB)")
    # int8 graphs and both precision gates (measured on the held-out crops, recorded in the
    # manifest and, for bf16, in the checkpoint), so ``--precision auto`` can pick them
    # query graphs float32: int8 made the bundled model's 128-wide MLP slower (export/quantize.py)
    manifest = export_checkpoint(out, export_dir, force=True, log=print, int8=True, gate=True,
                                 int8_query="float")
    if not run_checks(out, export_dir, manifest, log=print):
        sys.exit("error: the ONNX export does not match the checkpoint (see FAIL above)")


if __name__ == "__main__":
    main()
