"""One inpainting job, the same for the server and ``sair-inpaint``: encoded image and mask bytes in,
validated, inpainted, encoded PNG bytes out. Sharing it is what makes the two byte-identical and
gives them the same one-line error messages."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import InputError
from ..io import MAX_SIDE, read_image, read_mask

# How request inputs are named in messages; the ``--server`` client puts the user's paths back.
IMAGE_LABEL = "input 'image'"
MASK_LABEL = "input 'mask'"


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, checked before anything is decoded (server memory bound)."""

    max_request_bytes: int = 32 * 2**20      # encoded image + mask
    max_input_pixels: int = 4096 * 4096      # per decoded image or mask
    max_output_pixels: int = 4096 * 4096     # round(S*H) * round(S*W)


@dataclass(frozen=True)
class JobResult:
    """An encoded PNG and what the CLI reports about it."""

    png: bytes
    width: int
    height: int
    note: str


class _Named(io.BytesIO):
    """Request bytes that io.py's readers open like a file and name like a path in messages."""

    def __init__(self, data: bytes, label: str):
        super().__init__(data)
        self.label = label

    def __str__(self) -> str:
        return self.label


def to_uint8(image: np.ndarray) -> np.ndarray:
    """An inpainter's output as (H, W, 3) uint8: float in [0, 1] is rounded the way ``save_image``
    rounds it; uint8 is passed through."""
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0, 1) * 255.0 + 0.5).astype(np.uint8)


def encode_png(image: np.ndarray) -> bytes:
    """(H, W, 3) float in [0, 1] or uint8 -> PNG bytes, exactly as ``save_image`` writes a .png."""
    buf = io.BytesIO()
    Image.fromarray(to_uint8(image), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def check_scale(scale: float) -> None:
    """Refuse a scale the CLI would refuse, with its message."""
    if not (scale >= 1.0) or scale != scale or scale == float("inf"):
        raise InputError(f"--scale must be a number >= 1, got {scale}")


def _header_size(data: bytes, what: str, label: str, limits: Limits) -> tuple[int, int]:
    """An image's size from its header only (nothing decoded); refuses bombs and over-limit sizes."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except Image.DecompressionBombError:
        raise InputError(f"{what} {label} is too large to open safely (over {MAX_SIDE} px a side)") from None
    except Exception:  # noqa: BLE001 - unreadable: read_image/read_mask give the CLI's message
        return 0, 0
    if max(w, h) > MAX_SIDE:
        raise InputError(f"{what} {label} is too large to open safely (over {MAX_SIDE} px a side)")
    if w * h > limits.max_input_pixels:
        raise InputError(f"{what} {label} is {w}x{h} ({w * h / 1e6:.1f} megapixels); this server accepts "
                         f"at most {limits.max_input_pixels / 1e6:.1f}")
    return w, h


def output_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """The output (H, W) at ``scale``: round(S*H) x round(S*W)."""
    return int(round(scale * height)), int(round(scale * width))


def run_job(inpainter, image: bytes, mask: bytes, scale: float, limits: Limits | None = None,
            image_label: str = IMAGE_LABEL, mask_label: str = MASK_LABEL) -> JobResult:
    """Inpaint encoded ``image`` where encoded ``mask`` is white, at ``scale``; PNG bytes out.

    Everything a request may abuse (body size, header sizes, decoded pixel count, output size) is
    checked before decoding; then the same rules as ``sair-inpaint`` apply (masks of another size
    with the same aspect ratio are resized, a full mask is refused, an empty one copies the image).
    ``inpainter`` needs ``set_image(image, mask)`` and ``inpaint(scale)``.
    """
    limits = limits or Limits()
    check_scale(scale)
    size = len(image) + len(mask)
    if size > limits.max_request_bytes:
        raise InputError(f"request carries {size} bytes of images; this server accepts at most "
                         f"{limits.max_request_bytes}")
    w, h = _header_size(image, "image", image_label, limits)
    _header_size(mask, "mask", mask_label, limits)
    out_h, out_w = output_size(h, w, scale)
    if out_h * out_w > limits.max_output_pixels:
        raise InputError(f"output {out_w}x{out_h} is too large (over {limits.max_output_pixels / 1e6:.1f} "
                         f"megapixels); lower --scale")
    rgb = read_image(_Named(image, image_label))
    holes_mask = read_mask(_Named(mask, mask_label), rgb.shape[:2])
    holes = float(holes_mask.mean())
    if holes == 1.0:
        raise InputError(f"mask {mask_label} covers the whole image: there is nothing to inpaint from")
    if holes == 0.0 and scale == 1.0:
        return JobResult(encode_png(rgb), rgb.shape[1], rgb.shape[0], "mask is empty: copied the image")
    note = "mask is empty: upscaled without holes" if holes == 0.0 else f"{holes:.1%} holes"
    inpainter.set_image(rgb, holes_mask)
    result = inpainter.inpaint(scale)
    return JobResult(encode_png(result), result.shape[1], result.shape[0], note)
