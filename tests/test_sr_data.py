"""Super-resolution training samples (``--sr-prob``), ``--base``, and the pinned held-out set."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from sair_deploy.model.config import SAIRConfig  # noqa: E402
from sair_train.cli import cli  # noqa: E402
from sair_train.data import InpaintingDataset, SampleSpec, downsample  # noqa: E402
from sair_train.masks import BUCKETS, bucket_mask  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _source(size: int = 96) -> np.ndarray:
    """An image where every pixel is distinct enough to locate a window in it."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([x, y, 0.5 + 0.3 * np.sin(9 * x * y)], -1) + rng.normal(0, 0.05, (size, size, 3))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _full_gt(sample: dict, crop: int) -> np.ndarray:
    """The ground-truth crop rebuilt from the query coordinates (pixel centres in [-1, 1])."""
    coord, rgb = sample["coord"].numpy(), sample["gt"].numpy()
    rows = np.round((coord[:, 0] + 1) / 2 * crop - 0.5).astype(int)
    cols = np.round((coord[:, 1] + 1) / 2 * crop - 0.5).astype(int)
    gt = np.full((crop, crop, 3), -1.0, np.float32)
    gt[rows, cols] = rgb
    assert (gt >= 0).all(), "queries did not cover the crop"
    return np.round(gt * 255).astype(np.uint8)


def test_sr_samples_are_downsampled_native_crops_without_holes(tmp_path):
    src = _source()
    Image.fromarray(src).save(tmp_path / "a.png")
    t = 16
    spec = SampleSpec(size=t, queries=40000, scale_max=4.0, hflip=False, min_zoom=1.0,
                      sr_prob=1.0, patch=8)
    ds = InpaintingDataset([tmp_path / "a.png"], spec, seed=5, repeat=6)
    crops = set()
    for i in range(len(ds)):
        s = ds[i]
        crop = int(round(2.0 / float(s["cell"][0])))
        crops.add(crop)
        assert t <= crop <= 4 * t
        assert float(s["mask"].sum()) == 0 and float(s["patch_mask"].sum()) == 0
        gt = _full_gt(s, crop)
        # the input is the ground truth through Pillow's antialiased bicubic, as sair-eval --sr
        inp = np.round(s["image"].numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
        assert np.array_equal(inp, downsample(gt, (t, t)))
        # the ground truth is a window of the photo at its own resolution (no resampling)
        found = [(y, x) for y in range(src.shape[0] - crop + 1)
                 for x in range(src.shape[1] - crop + 1)
                 if np.array_equal(src[y:y + crop, x:x + crop], gt)]
        assert found, f"sample {i}: ground truth is not a native crop"
    assert len(crops) > 3  # random scales


def test_downsample_is_pillows_antialiased_bicubic():
    img = _source(64)
    ours = downsample(img, (16, 16))
    ref = np.asarray(Image.fromarray(img).resize((16, 16), Image.Resampling.BICUBIC,
                                                 reducing_gap=None))
    assert np.array_equal(ours, ref)
    # antialiased: a 4x reduction averages, so it is far closer to a box mean than to sampling
    box = img.reshape(16, 4, 16, 4, 3).mean((1, 3))
    assert np.abs(ours - box).mean() < np.abs(img[1::4, 1::4].astype(float) - box).mean()


def test_sr_prob_mixes_sample_kinds_deterministically_and_holes_are_optional(tmp_path):
    Image.fromarray(_source()).save(tmp_path / "a.png")
    files = [tmp_path / "a.png"]
    mixed = InpaintingDataset(files, SampleSpec(size=16, queries=64, scale_max=4.0,
                                                scale_prob=0.0, sr_prob=0.5), seed=1, repeat=40)
    kinds = [float(mixed[i]["mask"].sum()) == 0 for i in range(len(mixed))]
    assert 5 < sum(kinds) < 35  # both SR (no hole) and inpainting samples
    a, b = mixed[7], mixed[7]
    assert all(torch.equal(a[k], b[k]) for k in a)
    holes = InpaintingDataset(files, SampleSpec(size=16, queries=64, scale_max=4.0, sr_prob=1.0,
                                                sr_holes=1.0), seed=1, repeat=5)
    for i in range(len(holes)):
        s = holes[i]
        assert float(s["mask"].mean()) > 0.005 and float(s["cell"][0]) <= 2.0 / 16


def test_cli_sr_prob_trains_and_base_is_applied_or_refused(tmp_path):
    Image.fromarray(_source(64)).save(tmp_path / "a.png")
    out = tmp_path / "run"
    common = [str(tmp_path), "--config", "sair-tiny", "--size", "32", "--queries", "64",
              "--batch", "2", "--repeat", "2", "--epochs", "1", "--val-count", "0",
              "--no-progress", "--device", "cpu", "--fill", "onion", "--residual"]
    res = CliRunner().invoke(cli, common + ["-o", str(out), "--sr-prob", "0.5"])
    assert res.exit_code == 0, res.output
    start = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert start["args"]["sr_prob"] == 0.5
    res = CliRunner().invoke(cli, common + ["-o", str(tmp_path / "b"), "--base", "bicubic"])
    if "base" in {f.name for f in dataclasses.fields(SAIRConfig)}:
        assert res.exit_code == 0, res.output
        start = json.loads((tmp_path / "b" / "log.jsonl").read_text().splitlines()[0])
        assert start["model"]["base"] == "bicubic"
    else:
        assert res.exit_code == 2 and "'base' field" in res.output
        assert res.output.strip().count("\n") == 0


def _make_sample_data():
    spec = importlib.util.spec_from_file_location("make_sample_data",
                                                  REPO / "scripts" / "make_sample_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_heldout_manifest_is_a_separate_fixed_set_and_sair_eval_draws_its_masks():
    mod = _make_sample_data()
    pinned = json.loads((REPO / "scripts" / "heldout.json").read_text())
    photos = {p["path"] for p in pinned["photos"]}
    packages = {p["package"] for p in pinned["photos"]}
    assert len(pinned["crops"]) >= 30 and len(photos) >= 12 and len(packages) >= 2
    assert photos == {p for paths in mod.HELD_OUT.values() for p in paths}
    train = {p for paths in mod.DEBIAN_TRAIN.values() for p in paths}
    train |= {mod.PLASMA.format(n) for n in mod.PLASMA_WALLPAPERS}
    assert not photos & train and not packages & (set(mod.DEBIAN_TRAIN) | {
        "plasma-workspace-wallpapers", "sklearn", "matplotlib", "skimage"})
    # the masks saved with the set are the ones sair-eval draws (same seed, size, pairing)
    files = sorted(c["file"] for c in pinned["crops"])
    assert [c["file"] for c in pinned["crops"]] == files
    for m in pinned["masks"]:
        low, high = BUCKETS[m["bucket"]]
        drawn = bucket_mask(m["bucket"], m["index"], (pinned["crop"],) * 2, pinned["mask_seed"])
        assert m["crop"] == files[m["index"]]
        assert round(float(drawn.mean()), 4) == m["hole_ratio"] and low < m["hole_ratio"] <= high
