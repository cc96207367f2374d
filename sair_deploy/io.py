"""Reading images and masks the way users have them, and writing results without losing data."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError
from .files import atomic_write, check_writable_file, remove_stale_temps

MIN_SIDE = 8
MAX_SIDE = 16384
# Decompression-bomb guard: Pillow's own refusal threshold (twice its warning threshold).
MAX_PIXELS = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)
WRITABLE = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
# Largest output each format can hold (sides), and a cap on output pixels (3 bytes each in memory).
MAX_OUTPUT_SIDE = {".png": 65535, ".jpg": 65500, ".jpeg": 65500, ".webp": 16383, ".bmp": 65535,
                   ".tif": 65535, ".tiff": 65535}
MAX_OUTPUT_PIXELS = 1 << 30
ORIENTATION = 0x0112  # the EXIF tag; values 5-8 swap width and height


def _header(path: str | os.PathLike | BinaryIO, what: str) -> Image.Image:
    """Open ``path`` lazily (header only), with one-line errors for every way that fails; a
    binary file object (request bytes) is read as it is."""
    if not hasattr(path, "read"):
        path = Path(path)
        if not path.exists():
            raise InputError(f"{what} {path} does not exist")
        if not path.is_file():
            raise InputError(f"{what} {path} is not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise InputError(f"{what} {path} has too many pixels to open safely "
                         f"({_pixels_in(exc)}at most {MAX_PIXELS / 1e6:.0f} Mpx)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(_corrupt(what, path, exc)) from None
    w, h = im.size
    if min(w, h) < MIN_SIDE or max(w, h) > MAX_SIDE:
        raise InputError(f"{what} {path} is {w}x{h}; sides must be between {MIN_SIDE} and {MAX_SIDE} px")
    if w * h > MAX_PIXELS:
        raise InputError(f"{what} {path} is {w}x{h} = {w * h / 1e6:.0f} Mpx; at most "
                         f"{MAX_PIXELS / 1e6:.0f} Mpx can be opened safely")
    return im


def _pixels_in(exc: Exception) -> str:
    import re

    m = re.search(r"\((\d+) pixels\)", str(exc))
    return f"{int(m.group(1)) / 1e6:.0f} Mpx; " if m else ""


def _corrupt(what: str, path: Path, exc: Exception) -> str:
    return (f"cannot read {what} {path}: not an image or the file is corrupt "
            f"({str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__})")


def _open(path: str | os.PathLike | BinaryIO, what: str) -> Image.Image:
    """The decoded image, turned upright as viewers show it (its EXIF orientation applied)."""
    im = _header(path, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
            ImageOps.exif_transpose(im, in_place=True)  # no copy of an image already upright
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(_corrupt(what, path, exc)) from None
    return im


def _exif_orientation(raw: bytes) -> int:
    exif = Image.Exif()
    exif.load(raw)
    return exif.get(ORIENTATION, 1)


def image_size(path: str | os.PathLike, what: str = "image") -> tuple[int, int]:
    """``(height, width)`` of an image file as viewers show it (EXIF orientation applied), read
    from its header: cheap, for checking outputs before any work."""
    im = _header(path, what)
    try:
        if im.format == "PNG":  # Pillow decodes a whole PNG to look for EXIF after the pixels
            raw = im.info.get("exif")  # an eXIf chunk before the pixels (where writers put it)
            orientation = _exif_orientation(raw) if raw else 1
        else:
            orientation = im.getexif().get(ORIENTATION, 1)
    except Exception:  # an unreadable EXIF block: Pillow's exif_transpose ignores it too
        orientation = 1
    w, h = im.size
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def output_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """The documented output size ``(round(S*H), round(S*W))`` (no overflow for absurd S)."""
    if not math.isfinite(scale) or scale * max(height, width) > 1e12:
        return (1 << 62, 1 << 62)
    return int(round(scale * height)), int(round(scale * width))


def check_output_size(height: int, width: int, scale: float, path: str | os.PathLike) -> None:
    """Refuse a scale whose output ``path``'s format cannot hold, or that is absurdly large."""
    oh, ow = output_size(height, width, scale)
    ext = Path(path).suffix.lower()
    side = MAX_OUTPUT_SIDE.get(ext, 65535)
    if max(oh, ow) > side or oh * ow > MAX_OUTPUT_PIXELS:
        shown = f"{ow}x{oh}" if oh < (1 << 62) else "astronomically large"
        raise InputError(f"--scale {scale:g} on a {width}x{height} image gives a {shown} output; "
                         f"at most {side} px a side ({ext or 'png'}) and "
                         f"{MAX_OUTPUT_PIXELS / 1e6:.0f} Mpx in all")


def check_output_path(path: str | os.PathLike, force: bool) -> None:
    """Refuse, before any work, an output path whose extension, folder or existing file would
    make the final write fail."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in WRITABLE:
        raise InputError(f"cannot write {path}: unknown image extension {ext or '(none)'}; "
                         f"use one of {', '.join(sorted(WRITABLE))}")
    check_writable_file(path, force)


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


def read_image(path: str | os.PathLike | BinaryIO, dtype=np.float32) -> np.ndarray:
    """An image file as ``(H, W, 3)`` float32 in [0, 1] (grayscale replicated, alpha dropped,
    16-bit scaled), or with ``dtype=np.uint8`` as 8 bits: what the runtime computes on, at a
    quarter of the memory (an 8-bit file is read without any float copy)."""
    im = _open(path, "image")
    if np.dtype(dtype) == np.uint8:
        if im.mode in ("RGBA", "LA", "PA", "P", "L", "1", "CMYK", "YCbCr"):
            im = im.convert("RGB")
        if im.mode == "RGB":
            a = np.asarray(im, dtype=np.uint8)  # its own copy of the pixels: the image can go
            im.close()
            return a
        return np.round(read_image(path if not hasattr(path, "seek") else _rewound(path)) * 255).astype(np.uint8)
    a = _to_float(im)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return np.ascontiguousarray(a[..., :3])


def _rewound(f):
    f.seek(0)
    return f


def read_mask(path: str | os.PathLike | BinaryIO, image_shape: tuple[int, int], threshold: float = 0.5) -> np.ndarray:
    """A mask file as ``(H, W)`` bool, True = hole (white). Values above ``threshold`` (of the full
    range) are holes. A mask of another size with the image's aspect ratio is resized (nearest)."""
    im = _open(path, "mask")  # upright, as it displays: drawn over the image as it displays
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
    """Write ``(H, W, 3)`` as 8-bit RGB (uint8 as is, floats in [0, 1] rounded), atomically and
    upright (no EXIF orientation tag); refuse to overwrite without ``force``."""
    path = Path(path)
    check_output_path(path, force)
    if image.dtype == np.uint8:
        data = np.ascontiguousarray(image)
    else:
        data = (np.clip(image, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    fmt = Image.registered_extensions()[path.suffix.lower()]
    remove_stale_temps(path)  # left by a process killed while writing this same output
    try:
        atomic_write(path, lambda tmp: Image.fromarray(data, "RGB").save(tmp, format=fmt))
    except OSError as exc:
        raise InputError(f"cannot write {path} ({exc.strerror or str(exc).splitlines()[0][:80]})") from None
