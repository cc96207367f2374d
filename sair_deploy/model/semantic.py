"""Dense, text-aligned CLIP features: the ViT image tower read the MaskCLIP way.

The first ``L-1`` blocks run as usual. In the last block the q/k attention is skipped: each token
keeps its own value, ``v = out_proj(W_v ln_1(x))`` (MaskCLIP turns the value and output
projections into 1x1 convolutions); with ``keep_residual`` the block's residual and FFN follow as in
MaskCLIP, otherwise they are dropped (ClearCLIP). Then ``ln_post`` and the projection to CLIP's
joint space give ``E`` of shape ``(B, embed_dim, H/16, W/16)``, with no new parameters.
Positional embeddings are interpolated bicubically for non-native grids.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import CLIP_MEAN, CLIP_STD, SemanticConfig
from .liif import grid_size


class WeightsNotFound(RuntimeError):
    """The pretrained CLIP weights could not be loaded (offline, missing file, bad tag)."""


def build_visual(cfg: SemanticConfig) -> nn.Module:
    """An open_clip ``VisionTransformer`` of the configured size (QuickGELU, as OpenAI CLIP)."""
    from open_clip.transformer import QuickGELU, VisionTransformer

    return VisionTransformer(
        image_size=cfg.native_size, patch_size=cfg.patch_size, width=cfg.width,
        layers=cfg.layers, heads=cfg.heads, mlp_ratio=4.0, output_dim=cfg.embed_dim,
        act_layer=QuickGELU,
    )


_HINT = ("download open_clip_pytorch_model.bin (or OpenAI's ViT-B-16.pt) on a machine with network "
         "access and pass it with --clip-weights PATH, or put it in the open_clip cache "
         "(--clip-cache DIR)")


def load_pretrained_visual(cfg: SemanticConfig, weights: str | None = None,
                           cache_dir: str | None = None) -> dict[str, Tensor]:
    """Resolve CLIP's image-tower weights in one place and return its state dict (float32).

    ``weights`` is a local file: OpenAI's TorchScript archive (``ViT-B-16.pt``, read as a
    TorchScript archive: its state dict, no pickle execution), an open_clip ``.bin``/``.pt``
    state dict (read with ``weights_only=True``) or a ``.safetensors`` file. ``None`` uses
    ``cfg.pretrained`` (an open_clip tag such as ``openai``): the local caches are searched first
    (``cache_dir``, ``~/.cache/clip``, the Hugging Face cache) and the hub is tried only when it
    answers within seconds. Raises :class:`WeightsNotFound` with instructions otherwise.
    """
    source = weights or cfg.pretrained
    if source is None:
        raise WeightsNotFound("no pretrained CLIP weights configured; " + _HINT)
    path = Path(source) if weights else _find_tag(cfg, source, cache_dir)
    if not path.is_file():
        raise WeightsNotFound(f"CLIP weights file {path} not found; {_HINT}")
    state = _visual_state(_read_weights(path))
    try:  # the state must fit the configured tower exactly
        build_visual(cfg).load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsNotFound(f"CLIP weights {path} do not fit {cfg.clip_model} "
                              f"(width {cfg.width}, {cfg.layers} layers): {first[:160]}; "
                              f"pass a ViT-B/16 file with --clip-weights") from None
    return state


def is_torchscript(path: Path) -> bool:
    """True for a TorchScript archive (a zip holding ``code/`` and ``constants.pkl``), the format
    of OpenAI's released CLIP files; plain ``torch.save`` zips hold neither."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any(n.split("/", 1)[-1] == "constants.pkl" for n in names) and \
        any("/code/" in n for n in names)


def _read_weights(path: Path) -> dict[str, Tensor]:
    """A weights file as a flat state dict, never executing pickled code."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        if is_torchscript(path):
            # TorchScript's own loader only rebuilds tensors and TorchScript modules.
            with warnings.catch_warnings():  # torch.jit.load's deprecation notice
                warnings.simplefilter("ignore", FutureWarning)
                return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsNotFound(f"cannot read CLIP weights {path} ({first[:160]}); {_HINT}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsNotFound(f"CLIP weights {path} hold no state dict; {_HINT}")
    return state


def _visual_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The image tower's entries (``visual.`` prefix removed; DDP's ``module.`` too), float32."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("visual.") for k in state):
        state = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def _find_tag(cfg: SemanticConfig, tag: str, cache_dir: str | None) -> Path:
    """The local file of an open_clip tag: caches first, then the hub if it is reachable."""
    from open_clip import pretrained as oc

    pcfg = oc.get_pretrained_cfg(cfg.clip_model, tag)
    if not pcfg:
        raise WeightsNotFound(f"{tag!r} is not an open_clip tag of {cfg.clip_model}; {_HINT}")
    url, hub = pcfg.get("url", ""), pcfg.get("hf_hub", "")
    candidates: list[Path] = []
    if url:
        name = os.path.basename(url)
        candidates += [Path(d) / name for d in (cache_dir, os.path.expanduser("~/.cache/clip"))
                       if d]
    if hub:
        repo, filename = os.path.split(hub)  # "org/name/" names the default file
        try:
            from huggingface_hub import try_to_load_from_cache

            for name in ([filename] if filename else [oc.HF_SAFE_WEIGHTS_NAME, oc.HF_WEIGHTS_NAME]):
                hit = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
                if isinstance(hit, str):
                    candidates.append(Path(hit))
        except ImportError:
            pass
    for c in candidates:
        if c.is_file():
            return c
    host = "huggingface.co" if hub else urllib.parse.urlparse(url).hostname or ""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not _reachable(host):
        raise WeightsNotFound(f"CLIP weights {tag!r} for {cfg.clip_model} are not in the local "
                              f"caches and {host} cannot be reached; {_HINT}")
    try:
        return Path(oc.download_pretrained(pcfg, cache_dir=cache_dir))
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsNotFound(f"cannot download CLIP weights {tag!r} ({first[:160]}); "
                              f"{_HINT}") from None


def _reachable(host: str, timeout: float = 3.0) -> bool:
    """Whether ``host:443`` accepts a connection within ``timeout`` seconds (DNS included, so an
    offline machine fails in seconds instead of retrying for most of a minute)."""
    if not host:
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(result and result[0])


def bicubic_weights(n_in: int, n_out, like: Tensor) -> Tensor:
    """``(n_out, n_in)``: torch's bicubic resize of an axis (``F.interpolate``, ``align_corners=
    False``: cubic convolution with a = -0.75, edge taps clamped, no antialias) as a matrix.

    The positional grid resizes with two small products in every runtime; ONNX Runtime's cubic
    ``Resize`` took 25 ms on CLIP's 14 x 14 x 768 grid where torch's took 1 ms. Taps are found by
    comparing float indices, so the graph has no integer arithmetic (TensorRT clips floats only).
    """
    a = -0.75
    sizes = grid_size((n_in, n_out), like)
    src = (torch.arange(n_out, device=like.device).to(torch.float32) + 0.5) * (sizes[0] / sizes[1]) - 0.5
    first = torch.floor(src)
    t = (src - first)[:, None]
    d = torch.cat([t + 1, t, 1 - t, 2 - t], dim=1)  # (n_out, 4): distance to each tap
    w = torch.where(d <= 1, ((a + 2) * d - (a + 3)) * d * d + 1, ((a * d - 5 * a) * d + 8 * a) * d - 4 * a)
    taps = first[:, None] + torch.arange(-1, 3, device=like.device).to(torch.float32)
    taps = torch.minimum(taps.clamp(min=0.0), sizes[0] - 1)
    onehot = (taps[:, :, None] == torch.arange(n_in, device=like.device).to(torch.float32)).to(w.dtype)
    return (w[:, :, None] * onehot).sum(dim=1).to(like.dtype)


class SemanticEncoder(nn.Module):
    """Frozen CLIP image tower giving a dense grid ``E`` for any ``H, W`` divisible by 16."""

    def __init__(self, cfg: SemanticConfig):
        super().__init__()
        self.cfg = cfg
        self.visual = build_visual(cfg)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)

    def train(self, mode: bool = True) -> "SemanticEncoder":
        return super().train(False)  # frozen: always in inference mode

    def positional_embedding(self, gh: int, gw: int) -> Tensor:
        """CLS + patch positional embeddings for a ``gh x gw`` grid (bicubic when not native)."""
        pos = self.visual.positional_embedding
        n = self.cfg.native_grid
        if not torch.compiler.is_exporting() and (gh, gw) == (n, n):
            return pos  # exported, the grid is a plan number: resized always (at n x n, exactly)
        grid = pos[1:].reshape(n, n * pos.shape[-1])
        # separable: rows, then columns by a broadcast product over the (gh, n, C) stack
        grid = (bicubic_weights(n, gh, pos) @ grid).reshape(gh, n, pos.shape[-1])
        grid = torch.matmul(bicubic_weights(n, gw, pos), grid)
        return torch.cat([pos[:1], grid.reshape(gh * gw, -1)], dim=0)

    def forward(self, image: Tensor) -> Tensor:
        """``image (B, 3, H, W)`` in [0, 1], ``H, W`` multiples of the patch size -> ``E``."""
        v = self.visual
        ps = self.cfg.patch_size
        b, _, h, w = image.shape
        if h % ps or w % ps:
            raise ValueError(f"semantic input {h}x{w} is not a multiple of {ps}")
        gh, gw = h // ps, w // ps
        x = v.conv1((image - self.mean) / self.std)
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(b, 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding(gh, gw).to(x.dtype)
        x = v.ln_pre(x)
        blocks = v.transformer.resblocks
        for blk in blocks[:-1]:
            x = blk(x)
        x = self.dense_last_block(blocks[-1], x)
        x = v.ln_post(x) @ v.proj
        return x[:, 1:].transpose(1, 2).reshape(b, -1, gh, gw)

    def dense_last_block(self, blk: nn.Module, x: Tensor) -> Tensor:
        """The MaskCLIP last block: value path only, no q/k attention."""
        attn = blk.attn
        d = x.shape[-1]
        v = F.linear(blk.ln_1(x), attn.in_proj_weight[2 * d:], attn.in_proj_bias[2 * d:])
        v = attn.out_proj(v)
        if not self.cfg.keep_residual:
            return v
        x = x + blk.ls_1(v)
        return x + blk.ls_2(blk.mlp(blk.ln_2(x)))
