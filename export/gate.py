"""The accuracy gate a lower precision must pass before it is used: against float32 on held-out
photos, per hole-ratio bucket (sair-eval's protocol and masks).

A precision passes when, in every bucket, its mean PSNR is within :data:`MAX_PSNR_DROP` dB and
its mean SSIM within :data:`MAX_SSIM_DROP` of float32's (both against the ground truth,
composited, uint8), and the mean absolute difference to float32's output inside the holes is at
most :data:`MAX_HOLE_MAD` (on [0, 1]). Results go into ``manifest.json`` (``precision_gate``) and
a checkpoint's metadata; ``auto`` precision only picks a precision whose gate passed.

The held-out folder is an argument (``sair-export --gate-images DIR``); by default
``data/sample/heldout``, the held-out crops ``scripts/make_sample_data.py`` writes (photos no
training run here reads). Without it the gate stops and says how to make it: the photos packages
ship are all training data otherwise.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sair_deploy.errors import InputError

MAX_PSNR_DROP = 0.1  # dB
MAX_SSIM_DROP = 0.002
MAX_HOLE_MAD = 1.0 / 255
GATE_SIZE = 256
DEFAULT_EVAL = Path("data/sample/heldout")

Inpaint = Callable[[np.ndarray, np.ndarray], np.ndarray]


def as_float(result: np.ndarray) -> np.ndarray:
    """An ``inpaint`` result as float32 in [0, 1], whether it came back uint8 or float."""
    if result.dtype == np.uint8:
        return result.astype(np.float32) / 255.0
    return np.asarray(result, dtype=np.float32)


def gate_images(folder: str | os.PathLike | None = None) -> tuple[list[np.ndarray], str]:
    """The held-out images (``GATE_SIZE`` squares) and a label saying where they came from."""
    from sair_train.evaluate import load_square

    exts = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
    if folder is None:
        if not DEFAULT_EVAL.is_dir():
            raise InputError(f"the accuracy gate needs held-out photos: run scripts/make_sample_data.py "
                             f"(it writes {DEFAULT_EVAL}) or pass --gate-images DIR")
        folder = DEFAULT_EVAL
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in exts) if folder.is_dir() else []
    if not files:
        raise InputError(f"gate images: {folder} is not a folder of photos")
    return [load_square(f, GATE_SIZE) for f in files], str(folder)


def measure(reference: Inpaint, candidate: Inpaint, images: list[np.ndarray],
            seed: int = 0) -> dict[str, dict[str, float]]:
    """Per bucket: mean PSNR/SSIM of ``reference`` and ``candidate`` against the ground truth,
    and the candidate's mean absolute difference to the reference inside the holes."""
    from sair_train.evaluate import composite, metrics
    from sair_train.masks import BUCKETS, bucket_mask

    out = {}
    for bucket in BUCKETS:
        rows = []
        for i, gt in enumerate(images):
            mask = bucket_mask(bucket, i, gt.shape[:2], seed) > 0.5
            masked = (gt * (1 - mask[..., None])).astype(np.float32)
            gt_u8 = np.round(gt * 255).astype(np.uint8)
            ref = np.clip(as_float(reference(masked, mask)), 0, 1)
            cand = np.clip(as_float(candidate(masked, mask)), 0, 1)
            m_ref = metrics(composite(ref, gt, mask), gt_u8)
            m_cand = metrics(composite(cand, gt, mask), gt_u8)
            rows.append((m_ref["psnr"], m_cand["psnr"], m_ref["ssim"], m_cand["ssim"],
                         float(np.abs(ref - cand)[mask].mean())))
        r = np.array(rows, dtype=np.float64)
        out[bucket] = {"psnr_fp32": r[:, 0].mean(), "psnr": r[:, 1].mean(),
                       "ssim_fp32": r[:, 2].mean(), "ssim": r[:, 3].mean(),
                       "hole_mad": r[:, 4].mean(), "n": len(rows)}
        out[bucket] = {k: (int(v) if k == "n" else round(float(v), 6)) for k, v in out[bucket].items()}
    return out


def verdict(per_bucket: dict[str, dict[str, float]]) -> dict[str, Any]:
    """``{"passed", "failures": [one line per failed limit, saying by how much]}``."""
    failures = []
    for bucket, m in per_bucket.items():
        d_psnr = abs(m["psnr"] - m["psnr_fp32"])
        d_ssim = abs(m["ssim"] - m["ssim_fp32"])
        if d_psnr > MAX_PSNR_DROP:
            failures.append(f"{bucket}: PSNR {m['psnr'] - m['psnr_fp32']:+.3f} dB vs float32 "
                            f"(limit ±{MAX_PSNR_DROP}, over by {d_psnr - MAX_PSNR_DROP:.3f})")
        if d_ssim > MAX_SSIM_DROP:
            failures.append(f"{bucket}: SSIM {m['ssim'] - m['ssim_fp32']:+.4f} vs float32 "
                            f"(limit ±{MAX_SSIM_DROP}, over by {d_ssim - MAX_SSIM_DROP:.4f})")
        if m["hole_mad"] > MAX_HOLE_MAD:
            failures.append(f"{bucket}: mean abs diff in holes {m['hole_mad'] * 255:.3f}/255 "
                            f"(limit 1/255, over by {(m['hole_mad'] - MAX_HOLE_MAD) * 255:.3f}/255)")
    return {"passed": not failures, "failures": failures}


def _runner(backend) -> Inpaint:
    from sair_deploy.inpainter import Inpainter

    inp = Inpainter(backend)

    def run(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        inp.set_image(image, mask)
        return inp.inpaint(1.0, dtype=np.float32)  # before the 8-bit step: the gate sees all of it

    return run


def run_gate(precision: str, reference_backend, candidate_backend,
             images: list[np.ndarray], source: str) -> dict[str, Any]:
    """Measure ``candidate_backend`` (running ``precision``) against the float32
    ``reference_backend`` on ``images``; the record stored in manifests and checkpoints."""
    per_bucket = measure(_runner(reference_backend), _runner(candidate_backend), images)
    return {**verdict(per_bucket), "backend": candidate_backend.name, "images": len(images),
            "source": source,
            "limits": {"psnr_db": MAX_PSNR_DROP, "ssim": MAX_SSIM_DROP, "hole_mad": MAX_HOLE_MAD},
            "buckets": per_bucket}


def gate_line(precision: str, record: dict[str, Any]) -> str:
    """One line for logs: pass/fail, the worst margins, the failures."""
    b = record["buckets"]
    worst_psnr = max(abs(m["psnr"] - m["psnr_fp32"]) for m in b.values())
    worst_ssim = max(abs(m["ssim"] - m["ssim_fp32"]) for m in b.values())
    worst_mad = max(m["hole_mad"] for m in b.values())
    head = (f"gate {precision} ({record['backend']}, {record['images']} images x {len(b)} buckets): "
            f"{'PASS' if record['passed'] else 'FAIL'}; worst |dPSNR| {worst_psnr:.3f} dB, "
            f"|dSSIM| {worst_ssim:.4f}, hole MAD {worst_mad * 255:.3f}/255")
    return head + ("" if record["passed"] else "; " + "; ".join(record["failures"]))


def record_in_checkpoint(path: str | os.PathLike, gates: dict[str, Any]) -> None:
    """Store ``gates`` (merged with what is there) in a checkpoint's metadata, atomically; the
    weights are copied unchanged."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from sair_deploy.files import atomic_write
    from sair_deploy.model.checkpoint import read_metadata

    meta = dict(read_metadata(path))
    merged = {**json.loads(meta.get("precision_gate") or "{}"), **gates}
    meta["precision_gate"] = json.dumps(merged, sort_keys=True)
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
