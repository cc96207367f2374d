"""Checkpoints: one safetensors file holding the weights, the JSON config and the format version.

The config travels in the safetensors metadata, so a checkpoint alone rebuilds its model. Files
are written atomically (temp file in the same folder, then rename), so a crash never leaves a
half-written checkpoint under the final name. Loading never unpickles.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..errors import ModelError
from ..files import atomic_write
from ..version import __version__
from .config import SAIRConfig
from .sair import SAIR

FORMAT = "sair-deploy-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(model: SAIR, path: str | os.PathLike, extra: dict[str, str] | None = None) -> None:
    """Write ``model``'s weights and config to ``path`` (a ``.safetensors`` file), atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(model.cfg.to_dict()),
        "sair_deploy_version": __version__,
        **(extra or {}),
    }
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The checkpoint's metadata, validated (no torch needed)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise ModelError(f"checkpoint {path} is corrupt or not a safetensors file "
                         f"({str(exc).splitlines()[0][:120]}); re-download or re-train it") from None
    if meta.get("format") != FORMAT:
        raise ModelError(f"{path} is not a sair-deploy checkpoint (no '{FORMAT}' metadata)")
    version = int(meta.get("format_version", "-1"))
    if version != FORMAT_VERSION:
        raise ModelError(f"checkpoint {path} has format version {version}, this sair-deploy "
                         f"{__version__} reads version {FORMAT_VERSION}; use a matching release")
    return meta


def read_config(path: str | os.PathLike) -> SAIRConfig:
    return SAIRConfig.from_dict(json.loads(read_metadata(path)["config"]))


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> SAIR:
    """Rebuild a :class:`SAIR` from a checkpoint file, in eval mode."""
    from safetensors.torch import load_file

    cfg = read_config(path)
    model = SAIR(cfg)
    try:
        state = load_file(str(path), device=str(device))
    except Exception as exc:
        raise ModelError(f"checkpoint {path} is corrupt ({str(exc).splitlines()[0][:120]})") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelError(f"checkpoint {path} does not match its config "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.to(device).eval()
