"""Checkpoints: one safetensors file holding the weights, the JSON config and the format version.

The config travels in the safetensors metadata, so a checkpoint alone rebuilds its model. Files
are written atomically (temp file in the same folder, then rename), so a crash never leaves a
half-written checkpoint under the final name. Loading never unpickles.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import torch

from ..errors import ModelError
from ..files import atomic_write
from ..version import __version__
from .config import SAIRConfig
from .sair import SAIR

FORMAT = "sair-deploy-checkpoint"
FORMAT_VERSION = 1


def checkpoint_writer(model: SAIR, extra: dict[str, str] | None = None) -> Callable[[str], None]:
    """A function that writes ``model``'s weights and config to the file it is given (for
    :func:`sair_deploy.files.write_temp`, when a checkpoint is committed with other files)."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(model.cfg.to_dict()),
        "sair_deploy_version": __version__,
        **(extra or {}),
    }
    return lambda tmp: save_file(state, tmp, metadata=meta)


def save_checkpoint(model: SAIR, path: str | os.PathLike, extra: dict[str, str] | None = None) -> None:
    """Write ``model``'s weights and config to ``path`` (a ``.safetensors`` file), atomically."""
    atomic_write(path, checkpoint_writer(model, extra))


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
    version = meta.get("format_version")
    if version != str(FORMAT_VERSION):
        raise ModelError(f"checkpoint {path} has format version {version}, this sair-deploy "
                         f"{__version__} reads version {FORMAT_VERSION}; use a matching release")
    return meta


def read_config(path: str | os.PathLike) -> SAIRConfig:
    """The model config stored in a checkpoint, validated: ModelError on anything unreadable."""
    meta = read_metadata(path)
    if "config" not in meta:
        raise ModelError(f"checkpoint {path} has no model config in its metadata")
    try:
        return SAIRConfig.from_dict(json.loads(meta["config"]))
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise ModelError(f"checkpoint {path} has a bad model config: "
                         f"{str(exc).splitlines()[0][:160]}") from None


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> SAIR:
    """Rebuild a :class:`SAIR` from a checkpoint file, in eval mode."""
    from safetensors.torch import load_file

    cfg = read_config(path)
    try:
        model = SAIR(cfg)
    except Exception as exc:  # values the model cannot be built with
        raise ModelError(f"checkpoint {path} has a model config that cannot be built "
                         f"({str(exc).splitlines()[0][:120]})") from None
    try:
        state = load_file(str(path), device=str(device))
    except Exception as exc:
        raise ModelError(f"checkpoint {path} is corrupt ({str(exc).splitlines()[0][:120]})") from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes differ: the config's widths are not the weights'
        first = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), str(exc))
        raise ModelError(f"checkpoint {path}: the weights do not match its config ({first[:160]})") from None
    if missing or unexpected:
        raise ModelError(f"checkpoint {path} does not match its config "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.to(device).eval()
