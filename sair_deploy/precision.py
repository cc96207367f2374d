"""Inference precisions: what this machine supports and which one ``auto`` picks (no torch).

``fp32`` everywhere; ``bf16`` with the torch backend on CPUs with bfloat16 units
(``avx512_bf16`` or ``amx_bf16``); ``int8`` with ONNX Runtime on an export written with
``sair-export --int8``; ``fp16`` on CUDA. ``auto`` takes the fastest one the device supports
whose accuracy gate (:mod:`sair_export.gate`) passed for the model, recorded in the export's
``manifest.json`` or the checkpoint's metadata; without a passed gate it is ``fp32``.
"""

from __future__ import annotations

import functools
import json
import os
import platform
from pathlib import Path
from typing import Any

PRECISIONS = ("auto", "fp32", "bf16", "int8", "fp16")
# fastest first, per backend family (measured: bench/speed.py --precisions)
CPU_ORDER = {"torch": ("bf16", "fp32"), "onnx": ("int8", "fp32")}


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_supports_bf16() -> bool:
    """True when the CPU has bfloat16 matrix units torch's oneDNN kernels use (not emulation:
    without them bfloat16 runs slower than float32). ``SAIR_NO_BF16=1`` turns it off."""
    if os.environ.get("SAIR_NO_BF16") == "1":
        return False
    if cpu_flags() & {"avx512_bf16", "amx_bf16"}:
        return True
    if platform.system() == "Linux":
        return False
    try:  # macOS/Windows: ask oneDNN
        import torch

        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def gate_passed(gates: dict[str, Any] | None, precision: str) -> bool:
    """Whether ``gates`` (a manifest's or checkpoint's ``precision_gate``) records a pass."""
    return bool(gates and (gates.get(precision) or {}).get("passed"))


def checkpoint_gates(path: str | os.PathLike) -> dict[str, Any]:
    """The gate results a checkpoint's metadata records (``{}`` when none)."""
    from .model.checkpoint import read_metadata

    text = read_metadata(path).get("precision_gate")
    return json.loads(text) if text else {}


def pick_precision(requested: str, family: str, available: tuple[str, ...],
                   gates: dict[str, Any] | None) -> str:
    """Resolve ``auto`` for a CPU backend ``family`` (``torch``/``onnx``): the fastest of
    ``available`` whose gate passed, else ``fp32``; other requests come back as given."""
    if requested != "auto":
        return requested
    for p in CPU_ORDER[family]:
        if p == "fp32" or (p in available and gate_passed(gates, p)):
            return p
    return "fp32"
