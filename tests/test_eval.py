"""sair-eval: metrics match scikit-image, baselines run, the table has every bucket."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert set(saved["precisions"]) == {"tiny", "again"}  # what auto picked is recorded
    assert saved["results"]["tiny"] == saved["results"]["again"]  # deterministic masks
    assert (out / "results.md").read_text().count("|---|") == 1
    pngs = sorted((out / "examples").glob("*.png"))
    assert len(pngs) == 2 and Image.open(pngs[0]).size == (32 * 6, 32)
    assert len({p.name.split("_")[1] for p in pngs}) >= 2  # more than one bucket shown


def test_eval_precision_is_chosen_recorded_and_checked(tmp_path, tiny_checkpoint):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray((_photo(0, 64) * 255).astype(np.uint8)).save(folder / "0.png")
    out = tmp_path / "eval"
    res = CliRunner().invoke(cli, [tiny_checkpoint, str(folder), "--size", "32", "--no-baselines",
                                   "--precision", "fp32", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "results.json").read_text())["precisions"] == {"tiny": "fp32"}
    res = CliRunner().invoke(cli, [tiny_checkpoint, str(folder), "--precision", "fp16", "-o", str(out)])
    assert res.exit_code == 2 and "--device cuda" in res.output


def test_eval_runs_an_export_on_onnx_runtime(tmp_path):
    """An export folder is evaluated as sair-inpaint runs it: ONNX Runtime, auto precision (the
    bundled export's int8 tile graph passed its gate)."""
    from pathlib import Path

    export = Path(__file__).resolve().parents[1] / "sair_deploy" / "assets" / "sair-small-demo-onnx"
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray((_photo(0, 64) * 255).astype(np.uint8)).save(folder / "0.png")
    out = tmp_path / "eval"
    res = CliRunner().invoke(cli, [str(export), str(folder), "--size", "32", "--no-baselines", "-o", str(out)])
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "results.json").read_text())
    assert saved["precisions"] == {"sair-small-demo-onnx": "int8"}
    assert all(np.isfinite(e["psnr"]) for e in saved["results"]["sair-small-demo-onnx"].values())


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


def _mask_file(path, ratio_blocks: int, side: int = 64) -> None:
    """A 64x64 mask whose first ``ratio_blocks`` of 16 rows of 4-pixel blocks are white, so its
    hole ratio (ratio_blocks/16) survives the nearest resize to 32x32."""
    m = np.zeros((side, side), np.uint8)
    m[: ratio_blocks * side // 16] = 255
    Image.fromarray(m).save(path)


def test_eval_with_a_mask_folder_buckets_and_pairs_as_documented(tmp_path, tiny_checkpoint):
    from sair_train.evaluate import FolderMasks

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        Image.fromarray((_photo(i, 48) * 255).astype(np.uint8)).save(imgs / f"{i}.png")
    masks = tmp_path / "masks"
    (masks / "sub").mkdir(parents=True)
    ratios = {"a": 1, "b": 2, "c": 3, "d": 4, "e": 6, "f": 8, "g": 0, "h": 13}  # of 16
    for name, blocks in ratios.items():
        _mask_file((masks / "sub" if name in "ce" else masks) / f"{name}.png", blocks)
    # buckets (low, high]: 1,2,3/16 -> 0-20%; 4,6/16 -> 20-40%; 8/16 -> 40-60%; 0 and 13/16 unused
    fm = FolderMasks(masks, 32, seed=5)
    assert fm.buckets == list(BUCKETS) and fm.unused == 2
    names = {b: sorted(fm.folder.files[i].stem for i in fm.members[b]) for b in fm.buckets}
    assert names == {"0-20%": ["a", "b", "c"], "20-40%": ["d", "e"], "40-60%": ["f"]}

    out = tmp_path / "eval"
    args = [tiny_checkpoint, str(imgs), "--masks", str(masks), "--size", "32", "--seed", "5",
            "--no-baselines", "-o", str(out)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "results.json").read_text())
    assert report["buckets"] == list(BUCKETS)
    files = sorted(str(p) for p in imgs.iterdir())
    for bucket, pairs in report["pairs"].items():
        assert [p[0] for p in pairs] == files  # every image once per bucket, in sorted order
        order = [fm.folder.files[i].relative_to(masks).as_posix() for i in fm.members[bucket]]
        # image i gets mask i mod n of the bucket's seeded order
        assert [Path(p[1]).as_posix() for p in pairs] == [order[i % len(order)] for i in range(3)]
        for _, mask_name in pairs:
            low, high = BUCKETS[bucket]
            assert low < ratios[Path(mask_name).stem] / 16 <= high
        assert report["results"]["tiny"][bucket]["n"] == 3
    assert "masks from" in (out / "results.md").read_text()
    # the same command pairs the same way
    res = CliRunner().invoke(cli, args[:-1] + [str(tmp_path / "again")])
    assert json.loads((tmp_path / "again" / "results.json").read_text())["pairs"] == report["pairs"]

    # a folder with no usable mask is one line, exit 2
    empty = tmp_path / "unusable"
    empty.mkdir()
    _mask_file(empty / "full.png", 16)
    res = CliRunner().invoke(cli, [tiny_checkpoint, str(imgs), "--masks", str(empty), "--size",
                                   "32", "--no-baselines", "-o", str(tmp_path / "x")])
    assert res.exit_code == 2 and "hole ratio" in res.output
