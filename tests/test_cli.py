"""sair-inpaint end to end on a small random checkpoint, and every bad input we promise to catch."""

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import random_case
from sair_deploy import api
from sair_deploy.cli import cli


@pytest.fixture()
def case(tmp_path):
    image, mask = random_case(36, 52, seed=7, hole_ratio=0.1)
    img_path, mask_path = tmp_path / "in.png", tmp_path / "mask.png"
    Image.fromarray((image * 255).round().astype(np.uint8)).save(img_path)
    Image.fromarray(mask.astype(np.uint8) * 255).save(mask_path)
    return img_path, mask_path, mask


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output + result.stderr
    return result


@pytest.mark.parametrize("scale,size", [(1, (52, 36)), (1.5, (78, 54)), (2, (104, 72))])
def test_output_size_at_scales(case, tiny_checkpoint, tmp_path, scale, size):
    img, msk, _ = case
    out = tmp_path / "out.png"
    r = run(img, msk, "-o", out, "--scale", scale, "--checkpoint", tiny_checkpoint, "-q")
    assert r.exit_code == 0, r.stderr
    assert Image.open(out).size == size
    assert "wrote" in r.stderr


def test_known_pixels_unchanged_at_scale_1(case, tiny_checkpoint, tmp_path):
    img, msk, mask = case
    out = tmp_path / "out.png"
    assert run(img, msk, "-o", out, "--model", tiny_checkpoint, "-q").exit_code == 0
    a, b = np.asarray(Image.open(img)), np.asarray(Image.open(out))
    assert np.array_equal(a[~mask], b[~mask])


def test_flips_change_only_the_holes(case, tiny_checkpoint, tmp_path):
    img, msk, mask = case
    one, two = tmp_path / "one.png", tmp_path / "two.png"
    assert run(img, msk, "-o", one, "--model", tiny_checkpoint, "-q").exit_code == 0
    assert run(img, msk, "-o", two, "--model", tiny_checkpoint, "-q", "--flips", "2").exit_code == 0
    a, b = np.asarray(Image.open(one)), np.asarray(Image.open(two))
    assert np.array_equal(a[~mask], b[~mask]) and not np.array_equal(a[mask], b[mask])


def test_default_output_name_and_no_overwrite_without_force(case, tiny_checkpoint):
    img, msk, _ = case
    assert run(img, msk, "--model", tiny_checkpoint, "-q").exit_code == 0
    out = img.with_name("in_inpainted.png")
    assert out.exists()
    before = out.read_bytes()
    r = run(img, msk, "--model", tiny_checkpoint, "-q")
    assert r.exit_code == 2 and "--force" in r.stderr
    assert out.read_bytes() == before
    assert run(img, msk, "--model", tiny_checkpoint, "-q", "--force").exit_code == 0


def test_mask_of_other_size_same_aspect_is_resized(case, tiny_checkpoint, tmp_path):
    img, _, mask = case
    big = tmp_path / "big_mask.png"
    Image.fromarray(mask.astype(np.uint8) * 255).resize((104, 72), Image.NEAREST).save(big)
    assert run(img, big, "-o", tmp_path / "o.png", "--model", tiny_checkpoint, "-q").exit_code == 0


def test_mask_with_other_aspect_is_refused(case, tiny_checkpoint, tmp_path):
    img, _, _ = case
    bad = tmp_path / "bad.png"
    Image.new("L", (52, 52), 255).save(bad)
    r = run(img, bad, "-o", tmp_path / "o.png", "--model", tiny_checkpoint)
    assert r.exit_code == 2 and "aspect" in r.stderr


def test_empty_mask_copies_the_image(case, tiny_checkpoint, tmp_path):
    img, _, _ = case
    empty = tmp_path / "empty.png"
    Image.new("L", (52, 36), 0).save(empty)
    out = tmp_path / "o.png"
    r = run(img, empty, "-o", out, "--model", tiny_checkpoint)
    assert r.exit_code == 0 and "empty" in r.stderr
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(img)))


def test_full_mask_is_refused(case, tiny_checkpoint, tmp_path):
    img, _, _ = case
    full = tmp_path / "full.png"
    Image.new("L", (52, 36), 255).save(full)
    r = run(img, full, "-o", tmp_path / "o.png", "--model", tiny_checkpoint)
    assert r.exit_code == 2 and "whole image" in r.stderr


@pytest.mark.parametrize("mode", ["RGBA", "L", "I;16", "P", "LA"])
def test_any_image_mode_is_read(case, tiny_checkpoint, tmp_path, mode):
    img, msk, _ = case
    rgb = Image.open(img)
    if mode == "I;16":
        arr = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
        conv = Image.fromarray(arr)
        assert conv.mode == "I;16"
    else:
        conv = rgb.convert(mode)
    src = tmp_path / f"in_{mode.replace(';', '')}.png"
    conv.save(src)
    out = tmp_path / "o.png"
    r = run(src, msk, "-o", out, "--model", tiny_checkpoint, "-q")
    assert r.exit_code == 0, r.stderr
    assert Image.open(out).mode == "RGB" and Image.open(out).size == (52, 36)


def test_grayscale_mask_is_thresholded(case, tiny_checkpoint, tmp_path):
    img, _, mask = case
    soft = tmp_path / "soft.png"
    Image.fromarray(np.where(mask, 200, 30).astype(np.uint8)).save(soft)
    out = tmp_path / "o.png"
    assert run(img, soft, "-o", out, "--model", tiny_checkpoint, "-q").exit_code == 0
    a, b = np.asarray(Image.open(img)), np.asarray(Image.open(out))
    assert np.array_equal(a[~mask], b[~mask])


@pytest.mark.parametrize("problem", ["missing", "corrupt", "tiny", "not_image"])
def test_unreadable_inputs(case, tiny_checkpoint, tmp_path, problem):
    img, msk, _ = case
    bad = tmp_path / "bad.png"
    if problem == "corrupt":
        bad.write_bytes(img.read_bytes()[:200])
    elif problem == "tiny":
        Image.new("RGB", (4, 4)).save(bad)
    elif problem == "not_image":
        bad.write_text("hello")
    r = run(bad, msk, "-o", tmp_path / "o.png", "--model", tiny_checkpoint)
    assert r.exit_code == 2
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    expected = {"missing": "does not exist", "corrupt": "cannot read", "tiny": "sides must be",
                "not_image": "cannot read"}[problem]
    assert expected in r.stderr


@pytest.mark.parametrize("args,expected", [
    (["--scale", "0.5"], "--scale"),
    (["--scale", "nan"], "--scale"),
    (["--tile", "30"], "--tile"),
    (["--flips", "2", "--server", "http://127.0.0.1:9"], "--flips"),
])
def test_bad_options(case, tiny_checkpoint, tmp_path, args, expected):
    img, msk, _ = case
    r = run(img, msk, "-o", tmp_path / "o.png", "--model", tiny_checkpoint, *args)
    assert r.exit_code == 2 and expected in r.stderr


def test_unknown_output_extension(case, tiny_checkpoint, tmp_path):
    img, msk, _ = case
    r = run(img, msk, "-o", tmp_path / "o.xyz", "--model", tiny_checkpoint, "-q")
    assert r.exit_code == 2 and "extension" in r.stderr


def test_bad_checkpoints(case, tmp_path, tiny_checkpoint):
    img, msk, _ = case
    corrupt = tmp_path / "c.safetensors"
    corrupt.write_bytes(Path(tiny_checkpoint).read_bytes()[:1000])
    r = run(img, msk, "-o", tmp_path / "o.png", "--model", corrupt)
    assert r.exit_code == 3 and "corrupt" in r.stderr
    r = run(img, msk, "-o", tmp_path / "o.png", "--model", tmp_path / "nope.safetensors")
    assert r.exit_code == 3 and "does not exist" in r.stderr


def test_missing_default_model_says_what_to_do(case, tmp_path, monkeypatch):
    img, msk, _ = case
    monkeypatch.setattr(api, "DEFAULT_CHECKPOINT", tmp_path / "none.safetensors")
    monkeypatch.setattr(api, "DEFAULT_EXPORT", tmp_path / "none-onnx")
    r = run(img, msk, "-o", tmp_path / "o.png")
    assert r.exit_code == 3 and "--model" in r.stderr


def test_folder_mode_skips_bad_pairs(case, tiny_checkpoint, tmp_path):
    img, msk, _ = case
    images, masks, out = tmp_path / "imgs", tmp_path / "masks", tmp_path / "out"
    images.mkdir(), masks.mkdir()
    for name in ("a", "b", "c"):
        (images / f"{name}.png").write_bytes(img.read_bytes())
    (masks / "a.png").write_bytes(msk.read_bytes())
    (masks / "b_mask.png").write_bytes(msk.read_bytes())
    r = run(images, masks, "-o", out, "--model", tiny_checkpoint, "-q")
    assert r.exit_code == 1
    assert "2 of 3" in r.stderr and "skipped c.png" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    r = run(images, msk, "-o", tmp_path / "out2", "--model", tiny_checkpoint, "-q")
    assert r.exit_code == 0 and "3 of 3" in r.stderr


def test_stats_line_counts_the_images_calls_and_bytes(case, tiny_checkpoint, tmp_path):
    img, msk, _ = case
    out = tmp_path / "o.png"
    res = run(img, msk, "-o", out, "--model", tiny_checkpoint, "--scale", "2", "--stats", "-q")
    assert res.exit_code == 0, res.stderr
    line = [ln for ln in res.stderr.splitlines() if ln.startswith("stats:")]
    assert len(line) == 1
    assert "graph calls (prepare 1," in line[0] and "assemble 1)" in line[0]
    assert "MB to the device" in line[0] and "[torch, fp32]" in line[0]


_POOL_SCRIPT = """
import os, sys
from sair_deploy import cli
from sair_deploy.backends import onnx_backend
from sair_deploy.api import DEFAULT_EXPORT
if sys.argv[1] == "cli":
    sys.argv = ["sair-inpaint", *sys.argv[2:]]
    try:
        cli.main()
    except SystemExit as exc:
        assert not exc.code, exc.code
before = len(os.listdir("/proc/self/task"))
backend = onnx_backend.OnnxBackend(DEFAULT_EXPORT, device="cpu")
own = sum(s.get_session_options().use_per_session_threads for s in backend.sessions.values())
print(onnx_backend._pool.get("threads"), len(os.listdir("/proc/self/task")) - before, own,
      len(backend.sessions))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_cli_process_shares_one_onnx_thread_pool(tmp_path):
    # sair-inpaint's own process: every ONNX Runtime session shares one pool, so a second backend
    # (a session per graph) adds no thread; a library caller keeps a pool per session
    import subprocess
    import sys

    root = Path(__file__).parents[1]
    args = ["cli", root / "examples/cat.png", root / "examples/cat_mask.png", "-o", tmp_path / "o.png",
            "--backend", "onnx", "--device", "cpu", "-q"]
    outs = {}
    for mode in ("cli", "library"):
        res = subprocess.run([sys.executable, "-c", _POOL_SCRIPT, *map(str, args if mode == "cli" else [mode])],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        outs[mode] = res.stdout.split()
    pool, new_threads, own, n = outs["cli"]
    assert (pool, new_threads, own) == ("0", "0", "0") and int(n) >= 4
    assert (tmp_path / "o.png").exists()
    pool, new_threads, own, n = outs["library"]
    assert pool == "None" and own == n and int(new_threads) > 0
