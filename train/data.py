"""Training and validation samples: an image crop, a hole mask, the semantic encoder's input and
a set of query coordinates with their ground-truth colours.

A sample is the whole image resized to ``T x T`` (``crop="whole"``, the paper's recipe) or a
random window at a random zoom (``crop="zoom"``). Scale ``s >= 1`` is learned the LIIF way: a crop of ``s*T`` pixels is the ground truth, the model
sees it downsampled to ``T x T`` (the training size) and is queried at the crop's full-resolution
pixel centres. Every random choice of a sample comes from a generator seeded by
``(seed, epoch, index)``, so a resumed run draws exactly the samples it would have drawn.
Unreadable images are skipped (another image is drawn) and counted in the sample's ``skipped``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from sair_deploy.coords import make_coord
from sair_deploy.preprocess import semantic_input

from .masks import BUCKETS, MaskFolder, bucket_mask, training_mask

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def list_images(sources: list[str | os.PathLike]) -> list[Path]:
    """Image files under each source: a folder (searched recursively) or a text file listing one
    path per line (relative paths are relative to the list file)."""
    files: list[Path] = []
    for src in sources:
        src = Path(src)
        if src.is_dir():
            files += sorted(p for p in src.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif src.is_file():
            for line in src.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    p = Path(line)
                    files.append(p if p.is_absolute() else src.parent / p)
        else:
            raise FileNotFoundError(f"training data {src} is neither a folder nor a list file")
    return files


def split_files(files: list[Path], val_count: int, seed: int) -> tuple[list[Path], list[Path]]:
    """A deterministic train/validation split: the same files and seed give the same split."""
    order = np.random.default_rng([seed, 7]).permutation(len(files))
    val_count = min(val_count, max(0, len(files) - 1))
    val = sorted(files[i] for i in order[:val_count])
    train = sorted(files[i] for i in order[val_count:])
    return train, val


def load_rgb(path: Path) -> np.ndarray:
    """An image as ``(H, W, 3)`` uint8 (grey and RGBA converted)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if img.shape[:2] == size:
        return img
    return np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.Resampling.BICUBIC))


def downsample(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(H, W, 3)`` uint8 resized to ``size`` (rows, cols) with Pillow's antialiased bicubic
    filter: how a user's small image typically came to be, and how ``sair-eval --sr`` makes its
    inputs, so super-resolution is trained and measured on the same degradation."""
    return np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.Resampling.BICUBIC,
                                                  reducing_gap=None))


def color_jitter(img: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast, saturation and per-channel gains (uint8 in, uint8 out), so a
    small training set does not teach the model its own colour priors."""
    x = img.astype(np.float32) / 255.0
    u = lambda: rng.uniform(1 - strength, 1 + strength)  # noqa: E731
    gray = x.mean(axis=2, keepdims=True)
    x = gray + (x - gray) * u()  # saturation
    x = x.mean() + (x - x.mean()) * u()  # contrast
    x = x * u() * rng.uniform(1 - strength / 2, 1 + strength / 2, size=3)  # brightness, colour cast
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


@dataclass
class SampleSpec:
    """What a training sample looks like."""

    size: int = 128  # T: the model's input is T x T (a multiple of 16)
    queries: int = 2304  # query points per image (LIIF samples 48^2)
    scale_max: float = 1.0  # super-resolution scales drawn uniformly in [1, scale_max]
    scale_prob: float = 0.5  # fraction of samples drawn at a scale > 1 (when scale_max > 1)
    hole_fraction: float = 0.5  # fraction of the queries drawn inside the hole
    crop: str = "zoom"  # "whole": the whole image resized; "zoom": a random window, random zoom
    min_zoom: float = 0.25  # zoom crops cover between this and 1 of the image's native resolution
    hflip: bool = True
    color_jitter: float = 0.0  # brightness/contrast/saturation/per-channel gain drawn in [1-j, 1+j]
    sem_max_side: int = 224
    semantic_target: bool = False  # also return the encoder input of the unmasked image
    patch: int = 0  # side of a dense window of full-res pixels over a hole (for the SSIM loss)
    sr_prob: float = 0.0  # fraction of super-resolution samples (see InpaintingDataset._sample)
    sr_holes: float = 0.0  # fraction of those that also have holes (0: known pixels only)


class InpaintingDataset(Dataset):
    """Random crops with random masks and sampled queries (training)."""

    def __init__(self, files: list[Path], spec: SampleSpec, seed: int = 0, repeat: int = 1,
                 masks: MaskFolder | None = None):
        if not files:
            raise ValueError("no training images")
        if spec.crop not in ("whole", "zoom"):
            raise ValueError(f"crop must be 'whole' or 'zoom', got {spec.crop!r}")
        if spec.size % 16:
            raise ValueError(f"training size {spec.size} must be a multiple of 16")
        self.files, self.spec, self.seed, self.repeat, self.masks = files, spec, seed, repeat, masks
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.files) * self.repeat

    def _read(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        skipped = 0
        i = index % len(self.files)
        for _ in range(len(self.files)):
            try:
                return load_rgb(self.files[i]), skipped
            except Exception:  # any unreadable file: count it and draw another
                skipped += 1
                i = int(rng.integers(0, len(self.files)))
        raise RuntimeError("no readable training image found")

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s = self.spec
        rng = np.random.default_rng([self.seed, self.epoch, index])
        img, skipped = self._read(index, rng)
        t = s.size
        if s.sr_prob > 0 and rng.random() < s.sr_prob:
            scale = float(rng.uniform(1.0, max(1.0, s.scale_max)))
            return self._sample(img, rng, skipped, max(t, int(round(t * scale))), sr=True)
        scale = 1.0
        if s.scale_max > 1 and rng.random() < s.scale_prob:
            scale = float(rng.uniform(1.0, s.scale_max))
        return self._sample(img, rng, skipped, max(t, int(round(t * scale))), sr=False)

    def _sample(self, img: np.ndarray, rng: np.random.Generator, skipped: int, crop: int,
                sr: bool) -> dict[str, torch.Tensor]:
        """A crop of ``crop`` pixels is the ground truth and its pixel centres the queries; the
        input is that crop at ``T x T``: resized, with holes (an inpainting sample), or, for a
        super-resolution sample (``sr``), downsampled the way a user's small image was made
        (:func:`downsample`), without holes except in a fraction ``sr_holes`` of them."""
        s, t = self.spec, self.spec.size
        gt = self._crop(img, crop, rng)
        if s.hflip and rng.random() < 0.5:
            gt = gt[:, ::-1]
        if s.color_jitter > 0:
            gt = color_jitter(gt, s.color_jitter, rng)
        gt = np.ascontiguousarray(gt)
        inp = (downsample if sr else _resize)(gt, (t, t)).astype(np.float32) / 255.0
        gtf = gt.astype(np.float32) / 255.0
        if sr and not (s.sr_holes > 0 and rng.random() < s.sr_holes):
            mask = np.zeros((t, t), np.float32)
        else:
            mask = self.masks.sample((t, t), rng) if self.masks else training_mask((t, t), rng)
        coord, rgb = self._queries(gtf, mask, rng)
        sample = self._common(inp, mask)
        sample.update(coord=torch.from_numpy(coord), gt=torch.from_numpy(rgb),
                      cell=torch.tensor([2.0 / crop, 2.0 / crop]),
                      skipped=torch.tensor(skipped))
        if s.patch:
            sample.update(self._patch(gtf, mask, rng))
        return sample

    def _patch(self, gt: np.ndarray, mask: np.ndarray,
               rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """A ``patch x patch`` window of full-res pixel centres around a random hole pixel: its
        coordinates, colours and hole mask, so a loss can see local structure (SSIM)."""
        crop, t, p = gt.shape[0], mask.shape[0], min(self.spec.patch, gt.shape[0])
        rows_in = (np.arange(crop) * t) // crop
        hole_full = mask[rows_in][:, rows_in] > 0.5
        ys, xs = np.nonzero(hole_full)
        if ys.size:
            k = int(rng.integers(0, ys.size))
            cy, cx = int(ys[k]), int(xs[k])
        else:
            cy, cx = int(rng.integers(0, crop)), int(rng.integers(0, crop))
        y0 = int(np.clip(cy - p // 2, 0, crop - p))
        x0 = int(np.clip(cx - p // 2, 0, crop - p))
        coord = make_coord((crop, crop), rows=(y0, y0 + p), cols=(x0, x0 + p))
        return {"patch_coord": torch.from_numpy(coord),
                "patch_gt": torch.from_numpy(np.ascontiguousarray(
                    gt[y0:y0 + p, x0:x0 + p].reshape(-1, 3))),
                "patch_mask": torch.from_numpy(np.ascontiguousarray(
                    hole_full[y0:y0 + p, x0:x0 + p].reshape(-1, 1).astype(np.float32)))}

    def _crop(self, img: np.ndarray, crop: int, rng: np.random.Generator) -> np.ndarray:
        """A ``crop x crop`` window at a random zoom (multi-scale crops from every source), or the
        whole image resized (``crop="whole"``)."""
        if self.spec.crop == "whole":
            return _resize(img, (crop, crop))
        h, w = img.shape[:2]
        lo = min(crop, h, w)  # native resolution (or the whole image when it is smaller)
        hi = min(h, w, max(lo, int(crop / self.spec.min_zoom)))
        side = int(rng.integers(lo, hi + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        return _resize(img[y:y + side, x:x + side], (crop, crop))

    def _queries(self, gt: np.ndarray, mask: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Query coordinates (full-res pixel centres of the crop) and their colours."""
        crop, t, q = gt.shape[0], mask.shape[0], self.spec.queries
        rows_in = (np.arange(crop) * t) // crop  # input pixel under each full-res pixel
        hole_full = mask[rows_in][:, rows_in].reshape(-1) > 0.5
        holes = np.flatnonzero(hole_full)
        nh = int(round(q * self.spec.hole_fraction)) if holes.size else 0
        idx = np.concatenate([holes[rng.integers(0, holes.size, nh)] if nh else
                              np.zeros(0, np.int64),
                              rng.integers(0, crop * crop, q - nh)])
        coord = make_coord((crop, crop))[idx]
        return coord, gt.reshape(-1, 3)[idx]

    def _common(self, inp: np.ndarray, mask: np.ndarray) -> dict[str, torch.Tensor]:
        sem_image, sem_valid = semantic_input(inp, mask, self.spec.sem_max_side)
        out = {
            "image": torch.from_numpy(np.ascontiguousarray(inp.transpose(2, 0, 1))),
            "mask": torch.from_numpy(np.ascontiguousarray(mask[None])),
            "sem_image": torch.from_numpy(sem_image),
            "sem_valid": torch.from_numpy(sem_valid),
        }
        if self.spec.semantic_target:
            full, _ = semantic_input(inp, np.zeros_like(mask), self.spec.sem_max_side)
            out["sem_full"] = torch.from_numpy(full)
        return out


class ValidationDataset(InpaintingDataset):
    """Deterministic validation samples: centre square, masks cycling through the buckets."""

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        t = self.spec.size
        img, skipped = self._read(index, np.random.default_rng([self.seed, index]))
        h, w = img.shape[:2]
        side = min(h, w)
        y, x = (h - side) // 2, (w - side) // 2
        inp = _resize(img[y:y + side, x:x + side], (t, t)).astype(np.float32) / 255.0
        bucket = list(BUCKETS)[index % len(BUCKETS)]
        mask = bucket_mask(bucket, index, (t, t), self.seed)
        sample = self._common(inp, mask)
        sample["skipped"] = torch.tensor(skipped)
        return sample
