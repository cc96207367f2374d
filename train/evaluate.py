"""``sair-eval``: the paper's table (PSNR, SSIM, L1, LPIPS per hole-ratio bucket) for a
checkpoint, an optional second checkpoint and the classical baselines.

Protocol (MISF's): every image is centre-cropped to a square and resized to ``size x size``;
mask ``i`` of each bucket is drawn deterministically (:func:`sair_train.masks.bucket_mask`), or,
with ``--masks DIR`` (NVIDIA's irregular masks, as the paper), taken from a mask folder: every
mask is resized to ``size x size`` (nearest), binarised, and put in the bucket of its hole ratio
(masks outside 0-60% are not used); the masks of a bucket are shuffled by a permutation seeded by
``(seed, bucket)`` and image ``i`` (in sorted order) gets mask ``i mod n`` of that order;
outputs are composited (``pred * mask + gt * (1 - mask)``) and quantised to uint8; PSNR and SSIM
are scikit-image's (``data_range=255``, 7x7 window), L1 is the mean absolute error on [0, 1];
every metric is a per-image mean. LPIPS needs VGG weights that cannot be downloaded here: it is
computed only when the ``lpips`` package and its weights are already on the machine, otherwise
the column says ``unavailable``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable

import click
import cv2
import numpy as np
from PIL import Image

from .masks import BUCKETS, MaskFolder, bucket_mask

Inpaint = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (HxWx3 float [0,1], HxW bool) -> HxWx3


# ---- methods ---------------------------------------------------------------------------------
def _backend_for(path: str) -> str:
    """A checkpoint runs on the torch backend; an export folder on ONNX Runtime, as
    ``sair-inpaint --model EXPORT_DIR`` runs it (``auto`` precision: its int8 graphs where
    their gate passed)."""
    return "onnx" if Path(path).is_dir() else "torch"


def checkpoint_inpainter(path: str, device: str = "cpu", flips: int = 1, precision: str = "auto") -> Inpaint:
    """A function that inpaints with a checkpoint through the runtime users run (scale 1).
    ``precision`` as ``sair-inpaint --precision`` (``auto``: bf16 on a CPU with bfloat16 units
    when the checkpoint's gate passed); ``run.precision`` says what runs."""
    from sair_deploy.api import load_inpainter

    inpainter = load_inpainter(path, backend=_backend_for(path), device=device, flips=flips, precision=precision)

    def run(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
        inpainter.set_image(img, mask)
        return inpainter.inpaint(1.0, dtype=np.float32)

    run.precision = inpainter.backend.precision
    return run


def _opencv(flag: int) -> Inpaint:
    def run(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
        u8 = np.round(img * 255).astype(np.uint8)
        out = cv2.inpaint(u8, mask.astype(np.uint8) * 255, 3, flag)
        return out.astype(np.float32) / 255.0

    return run


def _biharmonic(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    from skimage.restoration import inpaint_biharmonic

    return inpaint_biharmonic(img, mask, channel_axis=-1).astype(np.float32)


def baselines(biharmonic: bool = True) -> dict[str, Inpaint]:
    methods = {"OpenCV Telea": _opencv(cv2.INPAINT_TELEA), "OpenCV Navier-Stokes": _opencv(cv2.INPAINT_NS)}
    if biharmonic:
        methods["scikit-image biharmonic"] = _biharmonic
    return methods


# ---- metrics ---------------------------------------------------------------------------------
def composite(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """MISF's composite, quantised: uint8 ``pred * mask + gt * (1 - mask)``."""
    m = mask.astype(np.float32)[..., None]
    out = np.clip(pred, 0, 1) * m + gt * (1 - m)
    return np.round(out * 255).astype(np.uint8)


def metrics(out_u8: np.ndarray, gt_u8: np.ndarray) -> dict[str, float]:
    """PSNR (dB), SSIM and L1 of one uint8 image pair (scikit-image's definitions)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    with np.errstate(divide="ignore"):  # identical images: PSNR is inf
        psnr = float(peak_signal_noise_ratio(gt_u8, out_u8, data_range=255))
    return {
        "psnr": psnr,
        "ssim": float(structural_similarity(gt_u8, out_u8, data_range=255, win_size=7,
                                            channel_axis=-1)),
        "l1": float(np.abs(gt_u8.astype(np.float64) - out_u8.astype(np.float64)).mean() / 255),
    }


class Lpips:
    """LPIPS(vgg) on [-1, 1] when the ``lpips`` package and its weights are present offline."""

    def __init__(self):
        self.net = None
        try:
            import lpips  # noqa: F401  (optional; never a dependency)
            import torch

            ckpt = Path(torch.hub.get_dir()) / "checkpoints"
            if not any(ckpt.glob("vgg16-*.pth")):
                return
            self.net = lpips.LPIPS(net="vgg", verbose=False).eval()
        except Exception:
            self.net = None

    @property
    def available(self) -> bool:
        return self.net is not None

    def __call__(self, out_u8: np.ndarray, gt_u8: np.ndarray) -> float:
        import torch

        t = lambda a: torch.from_numpy(a.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None]  # noqa: E731
        with torch.no_grad():
            return float(self.net(t(out_u8), t(gt_u8)))


# ---- data ------------------------------------------------------------------------------------
class GeneratedMasks:
    """Mask ``i`` of each bucket drawn by :func:`bucket_mask` (the default protocol)."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed = size, seed
        self.buckets = list(BUCKETS)
        self.description = f"generated irregular masks, seed {seed}"

    def mask(self, bucket: str, index: int) -> tuple[np.ndarray, str]:
        """The boolean hole mask of image ``index`` in ``bucket`` and its name."""
        m = bucket_mask(bucket, index, (self.size, self.size), self.seed) > 0.5
        return m, f"generated:{bucket}:{index}"


class FolderMasks:
    """A mask folder bucketed by hole ratio, paired with images deterministically.

    Each mask is resized to ``size x size`` (nearest) and binarised (white = hole, or black with
    ``invert``); its hole ratio puts it in a bucket ``(low, high]`` of :data:`BUCKETS`; masks
    outside every bucket (empty, or over 60%) are left out. Within a bucket the masks (sorted by
    path) are shuffled by a permutation seeded by ``(seed, bucket index)``; image ``i`` gets mask
    ``i mod n`` of that order. Buckets without masks are left out of the table.
    """

    def __init__(self, root: str | Path, size: int, seed: int = 0, invert: bool = False):
        self.folder = MaskFolder(root, invert=invert)
        self.size = size
        ratios = [float(self.folder.load(i, (size, size)).mean()) for i in range(len(self.folder))]
        self.members: dict[str, list[int]] = {}
        for k, (name, (low, high)) in enumerate(BUCKETS.items()):
            idx = [i for i, r in enumerate(ratios) if low < r <= high]
            if idx:
                order = np.random.default_rng([seed, k, 23]).permutation(len(idx))
                self.members[name] = [idx[j] for j in order]
        self.buckets = list(self.members)
        self.unused = len(ratios) - sum(len(v) for v in self.members.values())
        counts = ", ".join(f"{b}: {len(v)}" for b, v in self.members.items())
        self.description = (f"masks from {root} ({counts}; {self.unused} outside the buckets), "
                            f"pairing seed {seed}")

    def mask(self, bucket: str, index: int) -> tuple[np.ndarray, str]:
        """The boolean hole mask of image ``index`` in ``bucket`` and its file's path."""
        members = self.members[bucket]
        i = members[index % len(members)]
        m = self.folder.load(i, (self.size, self.size)) > 0.5
        return m, str(self.folder.files[i].relative_to(self.folder.root))


def load_square(path: Path, size: int) -> np.ndarray:
    """Centre square of an image resized to ``size x size``, float32 [0, 1]."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        side = min(im.size)
        left, top = (im.width - side) // 2, (im.height - side) // 2
        im = im.crop((left, top, left + side, top + side))
        if side != size:
            im = im.resize((size, size), Image.Resampling.BICUBIC)
        return np.asarray(im, dtype=np.float32) / 255.0


def _classical(task: tuple[str, bool, np.ndarray, np.ndarray]) -> tuple[np.ndarray, float]:
    """One classical baseline on one masked image, in a worker process (``--jobs``)."""
    name, biharmonic, masked, mask = task
    t0 = time.perf_counter()
    pred = baselines(biharmonic)[name](masked, mask)
    return pred, time.perf_counter() - t0


def _inputs(masks, bucket: str, i: int, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """The mask of image ``i`` in ``bucket``, the masked image every method sees, the mask's name."""
    mask, name = masks.mask(bucket, i)
    return (gt * (1 - mask[..., None])).astype(np.float32), mask, name


def evaluate(methods: dict[str, Inpaint], files: list[Path], size: int = 256, seed: int = 0,
             examples: int = 0, examples_dir: Path | None = None,
             progress: bool = True, jobs: int = 1,
             masks: GeneratedMasks | FolderMasks | None = None) -> dict:
    """Run every method on every image x bucket; return the table as a JSON-able dict.

    ``masks`` gives mask ``i`` of each bucket (default: generated with ``seed``). ``jobs > 1``
    runs the classical baselines in that many worker processes first (they are CPU-bound and
    independent; the model runs in this process, on its device)."""
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    masks = masks or GeneratedMasks(size, seed)
    buckets = masks.buckets
    lp = Lpips()
    scores = {m: {b: [] for b in buckets} for m in methods}
    seconds = {m: 0.0 for m in methods}
    shown = {b: 0 for b in buckets}
    pairs: dict[str, list[list[str]]] = {b: [] for b in buckets}
    quota = -(-examples // max(1, len(buckets)))  # ceil
    images = [(f, load_square(f, size)) for f in files]
    work = [(b, i, f, img) for b in buckets for i, (f, img) in enumerate(images)]
    done: dict[tuple[str, int], tuple[np.ndarray, float]] = {}
    classical = [m for m in methods if m in baselines(True)]
    if jobs > 1 and classical:
        biharmonic = "scikit-image biharmonic" in methods
        tasks = [(m, biharmonic, *_inputs(masks, b, i, img)[:2]) for m in classical
                 for b, i, _, img in work]
        with ProcessPoolExecutor(jobs) as ex:
            results = list(tqdm(ex.map(_classical, tasks, chunksize=2), total=len(tasks),
                                desc="baselines", disable=not progress, mininterval=2.0))
        keys = [(m, w) for m in classical for w in range(len(work))]
        done = dict(zip(keys, results))
    for w, (bucket, i, f, gt) in enumerate(tqdm(work, desc="eval", disable=not progress, mininterval=2.0)):
        masked, mask, mask_name = _inputs(masks, bucket, i, gt)
        pairs[bucket].append([str(f), mask_name])
        gt_u8 = np.round(gt * 255).astype(np.uint8)
        row = [np.where(mask[..., None], np.uint8(255), gt_u8)]
        for name, run in methods.items():
            if (name, w) in done:
                pred, took = done[(name, w)]
            else:
                t0 = time.perf_counter()
                pred = run(masked, mask)
                took = time.perf_counter() - t0
            seconds[name] += took
            out = composite(pred, gt, mask)
            rec = metrics(out, gt_u8)
            if lp.available:
                rec["lpips"] = lp(out, gt_u8)
            scores[name][bucket].append(rec)
            row.append(out)
        # examples spread over the buckets, a different image in each
        if examples_dir is not None and shown[bucket] < quota and \
                sum(shown.values()) < examples and (i + buckets.index(bucket)) % 2 == 0:
            examples_dir.mkdir(parents=True, exist_ok=True)
            n = sum(shown.values())
            Image.fromarray(np.concatenate(row + [gt_u8], axis=1)).save(
                examples_dir / f"{n:03d}_{bucket.replace('%', '')}_{f.stem}.png")
            shown[bucket] += 1
    table = {}
    for name, per_bucket in scores.items():
        table[name] = {}
        for bucket, recs in per_bucket.items():
            entry = {k: float(np.mean([r[k] for r in recs])) for k in ("psnr", "ssim", "l1")}
            entry["lpips"] = float(np.mean([r["lpips"] for r in recs])) if lp.available \
                else "unavailable"
            entry["n"] = len(recs)
            table[name][bucket] = entry
    n_runs = max(1, len(work))
    return {"size": size, "seed": seed, "images": len(files), "buckets": buckets,
            "masks": masks.description, "pairs": pairs,
            "protocol": "MISF: composited, uint8, skimage PSNR/SSIM(7x7), L1 on [0,1]",
            "seconds_per_image": {m: s / n_runs for m, s in seconds.items()},
            "examples_columns": ["input (hole white)", *methods, "ground truth"],
            "results": table}


def markdown(report: dict) -> str:
    """The table as Markdown: one row per method, PSNR/SSIM/L1/LPIPS per bucket."""
    buckets = report["buckets"]
    head = "| Method | " + " | ".join(f"{b} PSNR↑ | {b} SSIM↑ | {b} L1↓ | {b} LPIPS↓"
                                      for b in buckets) + " |"
    sep = "|---|" + "---:|" * (4 * len(buckets))
    rows = [head, sep]
    for name, per in report["results"].items():
        cells = []
        for b in buckets:
            e = per[b]
            lp = e["lpips"] if isinstance(e["lpips"], str) else f"{e['lpips']:.4f}"
            cells += [f"{e['psnr']:.2f}", f"{e['ssim']:.4f}", f"{e['l1']:.4f}", lp]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    n = report["images"]
    rows.append("")
    rows.append(f"{n} images x {len(buckets)} buckets at {report['size']}x{report['size']}, "
                f"{report.get('masks', 'mask seed %d' % report['seed'])}; {report['protocol']}.")
    return "\n".join(rows) + "\n"


# ---- super-resolution (--sr) -----------------------------------------------------------------
Upscale = Callable[[np.ndarray, int], np.ndarray]  # (hxwx3 uint8, S) -> (S*h)x(S*w)x3 uint8
SR_SCALES = (2, 3, 4)
SR_CROP = 252  # divisible by 2, 3 and 4: the centre of each 256x256 evaluation square


def _as_u8(img: np.ndarray) -> np.ndarray:
    """The runtime's output as uint8, whether it returns uint8 or floats in [0, 1]."""
    if img.dtype == np.uint8:
        return img
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def checkpoint_upscaler(path: str, device: str = "cpu", flips: int = 1, precision: str = "auto") -> Upscale:
    """A function that upscales a whole image (an empty mask) by an integer factor through the
    runtime users run, as ``sair-inpaint --scale S`` does (``precision`` as for
    :func:`checkpoint_inpainter`)."""
    from sair_deploy.api import load_inpainter

    inpainter = load_inpainter(path, backend=_backend_for(path), device=device, flips=flips, precision=precision)

    def run(low: np.ndarray, scale: int) -> np.ndarray:
        inpainter.set_image(low.astype(np.float32) / 255.0, np.zeros(low.shape[:2], bool))
        return _as_u8(inpainter.inpaint(float(scale)))

    run.precision = inpainter.backend.precision
    return run


def pillow_upscaler(resample: Image.Resampling) -> Upscale:
    """Pillow's resize by an integer factor (the classical peers of ``--sr``)."""
    def run(low: np.ndarray, scale: int) -> np.ndarray:
        h, w = low.shape[:2]
        return np.asarray(Image.fromarray(low).resize((w * scale, h * scale), resample))

    return run


def sr_baselines() -> dict[str, Upscale]:
    return {"Pillow bicubic": pillow_upscaler(Image.Resampling.BICUBIC),
            "Pillow Lanczos": pillow_upscaler(Image.Resampling.LANCZOS)}


def evaluate_sr(methods: dict[str, Upscale], files: list[Path], size: int = 256,
                crop: int = SR_CROP, scales: tuple[int, ...] = SR_SCALES,
                progress: bool = True) -> dict:
    """Upscaling of known pixels: each image's ``size`` square (as the inpainting table uses),
    its centre ``crop x crop`` is the ground truth, downsampled by S with Pillow's antialiased
    bicubic (:func:`sair_train.data.downsample`, what ``--sr-prob`` trains on) and upscaled back by
    every method; PSNR, SSIM and L1 against the ground truth per scale, as a JSON-able dict."""
    from tqdm import tqdm

    from .data import downsample

    bad = [s for s in scales if s < 2 or crop % s]
    if bad:
        raise ValueError(f"--sr-crop {crop} is not divisible by scale(s) {bad} (or a scale < 2)")
    if crop > size:
        raise ValueError(f"--sr-crop {crop} is larger than --size {size}")
    keys = [f"x{s}" for s in scales]
    scores = {m: {k: [] for k in keys} for m in methods}
    seconds = {m: 0.0 for m in methods}
    off = (size - crop) // 2
    for f in tqdm(files, desc="sr", disable=not progress, mininterval=2.0):
        gt = np.round(load_square(f, size)[off:off + crop, off:off + crop] * 255).astype(np.uint8)
        for s, key in zip(scales, keys):
            low = downsample(gt, (crop // s, crop // s))
            for name, run in methods.items():
                t0 = time.perf_counter()
                out = run(low, s)
                seconds[name] += time.perf_counter() - t0
                if out.shape != gt.shape:
                    raise ValueError(f"{name} returned {out.shape} for x{s}, expected {gt.shape}")
                scores[name][key].append(metrics(out, gt))
    table = {name: {key: {**{k: float(np.mean([r[k] for r in recs])) for k in ("psnr", "ssim", "l1")},
                          "n": len(recs)} for key, recs in per.items()}
             for name, per in scores.items()}
    return {"size": size, "crop": crop, "scales": list(scales), "images": len(files),
            "protocol": "known pixels only: centre crop downsampled by S (Pillow antialiased "
                        "bicubic), upscaled back by S, uint8, skimage PSNR/SSIM(7x7), L1 on [0,1]",
            "seconds_per_image": {m: t / max(1, len(files) * len(scales))
                                  for m, t in seconds.items()},
            "results": table}


def markdown_sr(report: dict) -> str:
    """The ``--sr`` table as Markdown: one row per method, PSNR/SSIM per scale."""
    keys = [f"x{s}" for s in report["scales"]]
    rows = ["| Method | " + " | ".join(f"{k} PSNR↑ | {k} SSIM↑" for k in keys) + " |",
            "|---|" + "---:|" * (2 * len(keys))]
    for name, per in report["results"].items():
        cells = [f"{per[k]['psnr']:.2f} | {per[k]['ssim']:.4f}" for k in keys]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    rows += ["", f"{report['images']} images, {report['crop']}x{report['crop']} centre crops; "
                 f"{report['protocol']}."]
    return "\n".join(rows) + "\n"


def _run_sr(checkpoint: str, second: str | None, name: str | None, second_name: str | None,
            files: list[Path], size: int, crop: int, scales: tuple[int, ...],
            with_baselines: bool, out_dir: Path, device: str, flips: int = 1,
            precision: str = "auto") -> None:
    """``sair-eval --sr``: the upscaling table, printed and written as sr_results.json/.md."""
    methods: dict[str, Upscale] = {name or _label(checkpoint): checkpoint_upscaler(checkpoint, device, flips, precision)}
    if second:
        methods[second_name or _label(second)] = checkpoint_upscaler(second, device, flips, precision)
    if with_baselines:
        methods.update(sr_baselines())
    report = evaluate_sr(methods, files, size, crop, scales)
    report["precisions"] = _precisions(methods)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sr_results.json").write_text(json.dumps(report, indent=1))
    md = markdown_sr(report)
    (out_dir / "sr_results.md").write_text(md)
    click.echo(md)
    click.echo(_precision_line(report))


def _precisions(methods: dict) -> dict[str, str]:
    """The precision each checkpoint ran in (``auto`` may pick bf16 on this CPU)."""
    return {k: m.precision for k, m in methods.items() if hasattr(m, "precision")}


def _precision_line(report: dict) -> str:
    """The line printed under a table: what each checkpoint ran in."""
    return "precision: " + ", ".join(f"{k} {v}" for k, v in report["precisions"].items())


def _label(path: str) -> str:
    p = Path(path)
    return p.parent.name if p.stem == "model" else p.stem


@click.command(context_settings={"show_default": True})
@click.argument("checkpoint", type=click.Path())
@click.argument("images", type=click.Path(exists=True))
@click.option("--second", type=click.Path(), default=None,
              help="A second checkpoint in the same table (e.g. the --no-semantic ablation).")
@click.option("--name", default=None, help="Row label of CHECKPOINT [its run folder].")
@click.option("--second-name", default=None, help="Row label of --second.")
@click.option("--size", default=256, help="Evaluation size (square).")
@click.option("--seed", default=0, help="Mask seed (with --masks: the pairing seed).")
@click.option("--masks", "masks_dir", type=click.Path(), default=None,
              help="Mask folder (e.g. NVIDIA's irregular masks; white = hole), bucketed by hole "
                   "ratio, instead of generated masks.")
@click.option("--invert-masks", is_flag=True, help="The mask folder marks holes in black.")
@click.option("--limit", type=int, default=None, help="Evaluate the first N images only.")
@click.option("--baselines/--no-baselines", "with_baselines", default=True)
@click.option("--biharmonic/--no-biharmonic", default=True,
              help="Include scikit-image's biharmonic inpainting (slow on big holes).")
@click.option("-o", "--out", default="eval", type=click.Path(),
              help="Output folder: results.json, results.md, examples/.")
@click.option("--save-examples", default=0, help="Write N side-by-side PNGs.")
@click.option("--device", default="cpu")
@click.option("--jobs", default=1, help="Worker processes for the classical baselines.")
@click.option("--flips", type=click.Choice(["1", "2", "4"]), default="1",
              help="The checkpoints' self-ensemble (sair-inpaint --flips): 1 pass, or the mean "
                   "over 2 (left-right) or 4 (and upside-down) mirrored passes.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
              help="The checkpoints' precision, as sair-inpaint --precision (auto: bf16 on a CPU "
                   "with bfloat16 units when the checkpoint's gate passed; printed after the "
                   "table and kept in the results JSON).")
@click.option("--sr", is_flag=True,
              help="Instead of inpainting: upscaling of known pixels (downsampled by S, upscaled "
                   "back) against Pillow bicubic and Lanczos; writes sr_results.json/.md.")
@click.option("--sr-scales", default="2,3,4", help="Integer scales of --sr, comma-separated.")
@click.option("--sr-crop", default=SR_CROP, help="Centre crop of --sr (divisible by each scale).")
def cli(checkpoint: str, images: str, second: str | None, name: str | None,
        second_name: str | None, size: int, seed: int, limit: int | None,
        with_baselines: bool, biharmonic: bool, out: str, save_examples: int,
        device: str, jobs: int, sr: bool, sr_scales: str, sr_crop: int, masks_dir: str | None,
        invert_masks: bool, flips: str, precision: str) -> None:
    """Evaluate CHECKPOINT (a .safetensors checkpoint, run on torch, or an export folder, run on
    ONNX Runtime as sair-inpaint runs it) on the images under IMAGES (folder or list file)."""
    from sair_deploy.errors import SairError

    from .data import list_images

    try:
        if precision == "fp16" and not device.startswith("cuda"):
            raise click.UsageError("--precision fp16 is for --device cuda (float16 crawls on a CPU); "
                                   "use bf16 or fp32")
        files = list_images([images])[:limit]
        if not files:
            raise click.UsageError(f"no images under {images}")
        if sr:
            try:
                scales = tuple(int(v) for v in sr_scales.split(","))
            except ValueError:
                raise click.UsageError(f"--sr-scales {sr_scales!r}: give integers such as 2,3,4")
            _run_sr(checkpoint, second, name, second_name, files, size, sr_crop, scales,
                    with_baselines, Path(out), device, int(flips), precision)
            return
        methods: dict[str, Inpaint] = {name or _label(checkpoint):
                                       checkpoint_inpainter(checkpoint, device, int(flips), precision)}
        if second:
            methods[second_name or _label(second)] = checkpoint_inpainter(second, device, int(flips), precision)
        if with_baselines:
            methods.update(baselines(biharmonic))
        mask_source = None
        if masks_dir is not None:
            if not Path(masks_dir).is_dir():
                raise click.UsageError(f"--masks {masks_dir} is not a folder")
            try:
                mask_source = FolderMasks(masks_dir, size, seed, invert_masks)
            except FileNotFoundError as err:
                raise click.UsageError(str(err)) from None
            if not mask_source.buckets:
                raise click.UsageError(f"no mask under {masks_dir} has a hole ratio in "
                                       f"{', '.join(BUCKETS)}")
            missing = [b for b in BUCKETS if b not in mask_source.buckets]
            if missing:
                click.echo(f"note: no masks in bucket(s) {', '.join(missing)}; left out of the "
                           f"table", err=True)
    except SairError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
    except ValueError as err:  # bad --sr settings
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    out_dir = Path(out)
    report = evaluate(methods, files, size, seed, save_examples,
                      out_dir / "examples" if save_examples else None, jobs=jobs, masks=mask_source)
    report["precisions"] = _precisions(methods)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(report, indent=1))
    md = markdown(report)
    (out_dir / "results.md").write_text(md)
    click.echo(md)
    click.echo(_precision_line(report))


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
