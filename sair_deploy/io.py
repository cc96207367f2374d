"""Reading images and masks the way users have them, and writing results without losing data."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputError
from .files import atomic_write

MIN_SIDE = 8
MAX_SIDE = 16384
WRITABLE = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def _open(path: str | os.PathLike | BinaryIO, what: str) -> Image.Image:
    if not hasattr(path, "read"):  # a binary file object (e.g. request bytes) is read as it is
        path = Path(path)
        if not path.exists():
            raise InputError(f"{what} {path} does not exist")
        if not path.is_file():
            raise InputError(f"{what} {path} is not a file")
    try:
        im = Image.open(path)
        im.load()
    except Image.DecompressionBombError:
        raise InputError(f"{what} {path} is too large to open safely (over {MAX_SIDE} px a side)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"cannot read {what} {path}: not an image or the file is corrupt "
                         f"({str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__})") from None
    w, h = im.size
    if min(w, h) < MIN_SIDE or max(w, h) > MAX_SIDE:
        raise InputError(f"{what} {path} is {w}x{h}; sides must be between {MIN_SIDE} and {MAX_SIDE} px")
    return im


def _to_float(im: Image.Image) -> np.ndarray:
    """Any Pillow mode -> float32 in [0, 1], (H, W) for single-channel modes, else (H, W, C)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(im, dtype=np.float32) / 65535.0
    if im.mode in ("I", "F"):
        a = np.asarray(im, dtype=np.float32)
        top = 65535.0 if a.max(initial=0) > 255 else 255.0
        return np.clip(a / top, 0, 1)
    if im.mode in ("RGBA", "LA", "PA"):  # the alpha channel is not part of the picture
        im = im.convert("RGB" if im.mode != "LA" else "L")
    if im.mode not in ("RGB", "L"):
        im = im.convert("RGB")  # palette, CMYK, YCbCr, 1-bit, ...
    return np.asarray(im, dtype=np.float32) / 255.0


def read_image(path: str | os.PathLike | BinaryIO) -> np.ndarray:
    """An image file as ``(H, W, 3)`` float32 in [0, 1] (grayscale replicated, alpha dropped,
    16-bit scaled)."""
    a = _to_float(_open(path, "image"))
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return np.ascontiguousarray(a[..., :3])


def read_mask(path: str | os.PathLike | BinaryIO, image_shape: tuple[int, int], threshold: float = 0.5) -> np.ndarray:
    """A mask file as ``(H, W)`` bool, True = hole (white). Values above ``threshold`` (of the full
    range) are holes. A mask of another size with the image's aspect ratio is resized (nearest)."""
    im = _open(path, "mask")
    h, w = image_shape
    if im.size != (w, h):
        mw, mh = im.size
        if abs(mw * h - mh * w) > max(mw, w):  # aspect ratios differ by more than a pixel
            raise InputError(f"mask {path} is {mw}x{mh} but the image is {w}x{h}: different aspect "
                             f"ratios; give a mask of the image's size")
        im = (im.convert("L") if im.mode not in ("L", "I;16", "I", "F") else im)
        im = im.resize((w, h), Image.Resampling.NEAREST)
    a = _to_float(im)
    if a.ndim == 3:
        a = a.max(axis=2)
    return a > threshold


def save_image(path: str | os.PathLike, image: np.ndarray, force: bool = False) -> None:
    """Write ``(H, W, 3)`` float in [0, 1] as 8-bit, atomically; refuse to overwrite without ``force``."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in WRITABLE:
        raise InputError(f"cannot write {path}: unknown image extension {ext or '(none)'}; "
                         f"use one of {', '.join(sorted(WRITABLE))}")
    if path.exists() and not force:
        raise InputError(f"{path} already exists; pass --force to overwrite it")
    if not path.parent.exists():
        raise InputError(f"output folder {path.parent} does not exist")
    data = (np.clip(image, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    fmt = Image.registered_extensions()[ext]
    atomic_write(path, lambda tmp: Image.fromarray(data, "RGB").save(tmp, format=fmt))
