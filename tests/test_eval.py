"""sair-eval: metrics match scikit-image, baselines run, the table has every bucket."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402
from skimage.metrics import peak_signal_noise_ratio, structural_similarity  # noqa: E402

from sair_train.evaluate import (baselines, checkpoint_inpainter, cli, composite,  # noqa: E402
                                 evaluate, markdown, metrics)
from sair_train.masks import BUCKETS  # noqa: E402


def _photo(seed: int, size: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([x, y, 0.5 + 0.4 * np.sin(5 * x * y + seed)], -1)
    return np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1).astype(np.float32)


def test_metrics_agree_with_scikit_image():
    gt = np.round(_photo(0) * 255).astype(np.uint8)
    noisy = np.clip(gt.astype(int) + np.random.default_rng(1).integers(-9, 10, gt.shape), 0, 255)
    out = noisy.astype(np.uint8)
    m = metrics(out, gt)
    mse = np.mean((gt.astype(float) - out) ** 2)
    assert m["psnr"] == pytest.approx(10 * np.log10(255 ** 2 / mse), rel=1e-9)
    assert m["psnr"] == pytest.approx(peak_signal_noise_ratio(gt, out, data_range=255))
    assert m["ssim"] == pytest.approx(structural_similarity(gt, out, data_range=255, win_size=7,
                                                            channel_axis=-1))
    assert m["l1"] == pytest.approx(np.abs(gt / 255.0 - out / 255.0).mean())
    same = metrics(gt, gt)
    assert same["ssim"] == pytest.approx(1.0) and same["l1"] == 0 and np.isinf(same["psnr"])


def test_composite_keeps_known_pixels():
    gt, pred = _photo(0), _photo(5)
    mask = np.zeros(gt.shape[:2], bool)
    mask[10:20, 5:30] = True
    out = composite(pred, gt, mask)
    assert out.dtype == np.uint8
    assert np.array_equal(out[~mask], np.round(gt[~mask] * 255).astype(np.uint8))
    assert np.array_equal(out[mask], np.round(pred[mask] * 255).astype(np.uint8))


def test_baselines_fill_holes_plausibly():
    gt = _photo(2)
    mask = np.zeros(gt.shape[:2], bool)
    mask[16:28, 16:28] = True
    for name, run in baselines(biharmonic=True).items():
        out = run(gt * (1 - mask[..., None]), mask)
        assert out.shape == gt.shape and np.isfinite(out).all(), name
        err = np.abs(out[mask] - gt[mask]).mean()
        assert err < 0.1, (name, err)  # a smooth image: every baseline gets close


def test_eval_table_has_every_bucket(tmp_path, tiny_checkpoint):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray((_photo(i, 80)[:, :64] * 255).astype(np.uint8)).save(folder / f"{i}.png")
    methods = {"tiny": checkpoint_inpainter(tiny_checkpoint), **baselines(biharmonic=False)}
    report = evaluate(methods, sorted(folder.iterdir()), size=32, progress=False)
    assert set(report["results"]) == set(methods)
    for per in report["results"].values():
        assert list(per) == list(BUCKETS)
        for entry in per.values():
            assert entry["n"] == 2 and np.isfinite([entry["psnr"], entry["ssim"], entry["l1"]]).all()
            assert entry["lpips"] == "unavailable" or isinstance(entry["lpips"], float)
    md = markdown(report)
    assert all(b in md for b in BUCKETS) and "OpenCV Telea" in md and "tiny" in md

    out = tmp_path / "eval"
    res = CliRunner().invoke(cli, [tiny_checkpoint, str(folder), "--second", tiny_checkpoint,
                                   "--second-name", "again", "--size", "32", "--no-biharmonic",
                                   "-o", str(out), "--save-examples", "2"])
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["results"]) == {"tiny", "again", "OpenCV Telea", "OpenCV Navier-Stokes"}
    assert saved["results"]["tiny"] == saved["results"]["again"]  # deterministic masks
    assert (out / "results.md").read_text().count("|---|") == 1
    pngs = sorted((out / "examples").glob("*.png"))
    assert len(pngs) == 2 and Image.open(pngs[0]).size == (32 * 6, 32)
    assert len({p.name.split("_")[1] for p in pngs}) >= 2  # more than one bucket shown


def test_missing_checkpoint_is_one_line(tmp_path):
    Image.fromarray((_photo(0) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    res = CliRunner().invoke(cli, [str(tmp_path / "nope.safetensors"), str(tmp_path)])
    assert res.exit_code == 3 and "does not exist" in res.output
    assert res.output.strip().count("\n") == 0


def test_sr_table_follows_the_protocol_through_the_runtime(tmp_path, tiny_checkpoint):
    from sair_train.data import downsample
    from sair_train.evaluate import checkpoint_upscaler, evaluate_sr, markdown_sr, sr_baselines

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray((_photo(i, 56) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    files = sorted(folder.iterdir())
    methods = {"tiny": checkpoint_upscaler(tiny_checkpoint), **sr_baselines()}
    report = evaluate_sr(methods, files, size=56, crop=48, scales=(2, 3, 4), progress=False)
    assert set(report["results"]) == set(methods)
    for per in report["results"].values():
        assert list(per) == ["x2", "x3", "x4"]
        assert all(e["n"] == 2 and np.isfinite([e["psnr"], e["ssim"]]).all() for e in per.values())
    # the bicubic row by hand: centre 48 of the 56 square, Pillow down and up, skimage PSNR
    expect = []
    for f in files:
        gt = np.asarray(Image.open(f).convert("RGB"))[4:52, 4:52]
        low = np.asarray(Image.fromarray(gt).resize((16, 16), Image.Resampling.BICUBIC,
                                                    reducing_gap=None))
        up = np.asarray(Image.fromarray(low).resize((48, 48), Image.Resampling.BICUBIC))
        expect.append(peak_signal_noise_ratio(gt, up, data_range=255))
        assert np.array_equal(low, downsample(gt, (16, 16)))
    assert report["results"]["Pillow bicubic"]["x3"]["psnr"] == pytest.approx(np.mean(expect))
    bic = report["results"]["Pillow bicubic"]
    assert bic["x2"]["psnr"] > bic["x4"]["psnr"]  # smaller inputs lose more
    assert "x4 PSNR" in markdown_sr(report) and "Pillow Lanczos" in markdown_sr(report)

    out = tmp_path / "sr"
    res = CliRunner().invoke(cli, [tiny_checkpoint, str(folder), "--sr", "--size", "56",
                                   "--sr-crop", "48", "--sr-scales", "2,4", "-o", str(out)])
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "sr_results.json").read_text())
    assert saved["scales"] == [2, 4] and set(saved["results"]) == {"tiny", "Pillow bicubic",
                                                                   "Pillow Lanczos"}
    assert saved["results"]["tiny"]["x2"] == report["results"]["tiny"]["x2"]
    assert (out / "sr_results.md").read_text().count("|---|") == 1
    res = CliRunner().invoke(cli, [tiny_checkpoint, str(folder), "--sr", "--sr-crop", "50",
                                   "-o", str(out)])
    assert res.exit_code == 2 and "not divisible" in res.output
    assert res.output.strip().count("\n") == 0
