"""Issue 13: nothing lost, nothing sideways, no tracebacks. Every case a hostile first user found
(exit code, one line on stderr, no traceback, files that must survive still there byte for
byte), and property-based tests of the readers and of sair-inpaint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

torch = pytest.importorskip("torch")

from conftest import random_case  # noqa: E402
from sair_deploy.cli import cli as inpaint_cli  # noqa: E402
from sair_deploy.io import read_image, read_mask  # noqa: E402
from sair_deploy.model.checkpoint import read_metadata  # noqa: E402
from sair_export.cli import cli as export_cli  # noqa: E402
from sair_train.cli import cli as train_cli  # noqa: E402
from sair_train.trainer import load_state  # noqa: E402

ORIENTATION = 0x0112
REPO = Path(__file__).resolve().parents[1]


def invoke(cli, *args) -> object:
    """Run a CLI in-process; the result, after checking it printed no traceback."""
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in r.output + r.stderr
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return r


def one_line_error(r, code: int, *words: str) -> None:
    """Exit ``code`` and exactly one stderr line, an ``error:`` containing ``words``."""
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == code, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for w in words:
        assert w in lines[0], lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def save_u8(path: Path, a: np.ndarray, orientation: int | None = None) -> Path:
    im = Image.fromarray(a)
    if orientation is None:
        im.save(path)
    else:
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        im.save(path, exif=exif)
    return path


@pytest.fixture()
def pair(tmp_path):
    image, mask = random_case(20, 28, seed=3, hole_ratio=0.1)
    img = save_u8(tmp_path / "in.png", (image * 255).round().astype(np.uint8))
    msk = save_u8(tmp_path / "mask.png", mask.astype(np.uint8) * 255)
    return img, msk


# ---- 1, 2, 7, 10: sair-train's run folder ------------------------------------------------------
def _image(path: Path, seed: int = 0, size: int = 40) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_u8(path, (rng.random((size, size, 3)) * 255).astype(np.uint8))


TRAIN = ["--config", "sair-tiny", "--no-semantic", "--size", "32", "--queries", "64", "--batch", "2",
         "--val-count", "0", "--no-progress", "--device", "cpu", "--log-every", "1"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 2-step run, started without -o (so into runs/sair under its folder)."""
    root = tmp_path_factory.mktemp("train")
    for i in range(2):
        _image(root / "d" / f"{i}.png", seed=i)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        r = invoke(train_cli, "d", *TRAIN, "--max-steps", "2")
    finally:
        os.chdir(cwd)
    assert r.exit_code == 0, r.output
    return root, root / "runs" / "sair"


def test_a_new_run_never_overwrites_a_finished_one(finished_run, monkeypatch):
    root, run = finished_run
    before = snapshot(run)
    monkeypatch.chdir(root)
    r = invoke(train_cli, "d", *TRAIN, "--max-steps", "1")  # the default folder again
    one_line_error(r, 2, "runs/sair", "not empty", "--resume", "--force")
    r = invoke(train_cli, "d", *TRAIN, "--max-steps", "1", "-o", str(run))
    one_line_error(r, 2, "not empty")
    assert snapshot(run) == before


def test_resume_into_another_run_folder_is_refused(finished_run, tmp_path):
    root, run = finished_run
    other = tmp_path / "B"
    other.mkdir()
    (other / "state.pt").write_bytes(b"B's state")
    (other / "model.safetensors").write_bytes(b"B's model")
    before, before_a = snapshot(other), snapshot(run)
    r = invoke(train_cli, "--resume", str(run), "-o", str(other), "--no-progress")
    one_line_error(r, 2, str(other), "not empty")
    assert snapshot(other) == before and snapshot(run) == before_a


@pytest.mark.parametrize("extra,named", [
    (["--lr", "0.5"], ["--lr"]),
    (["--config", "sair-small", "--fill", "onion", "--size", "64"], ["--config", "--fill", "--size"]),
    (["DATA2"], ["DATA"]),
])
def test_resume_refuses_options_that_differ_from_the_run(finished_run, extra, named):
    root, run = finished_run
    before = snapshot(run)
    extra = [str(root / "d2") if e == "DATA2" else e for e in extra]
    (root / "d2").mkdir(exist_ok=True)
    r = invoke(train_cli, *extra, "--resume", str(run), "--no-progress", "--max-steps", "3")
    one_line_error(r, 2, "--resume", *named)
    assert snapshot(run) == before


def test_resume_applies_the_options_that_can_change_and_says_so(tmp_path):
    _image(tmp_path / "d" / "a.png")
    run = tmp_path / "run"
    assert invoke(train_cli, str(tmp_path / "d"), *TRAIN, "--max-steps", "1", "-o", str(run)).exit_code == 0
    r = invoke(train_cli, "--resume", str(run), "--max-steps", "2", "--no-progress", "--lr", "1e-4")
    assert r.exit_code == 0, r.stderr
    assert "applied --max-steps 2" in r.stderr  # --lr equals the run's: not a conflict
    assert load_state(run)["step"] == 2
    starts = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    assert sum(1 for s in starts if s.get("event") == "start") == 2  # one run, appended


def test_force_starts_over_without_mixing_logs(tmp_path):
    _image(tmp_path / "d" / "a.png")
    run = tmp_path / "run"
    args = [str(tmp_path / "d"), *TRAIN, "-o", str(run)]
    assert invoke(train_cli, *args, "--max-steps", "2").exit_code == 0
    (run / "notes.txt").write_text("mine")
    r = invoke(train_cli, *args, "--max-steps", "1", "--force")
    assert r.exit_code == 0, r.stderr
    log = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    assert [e.get("event") for e in log].count("start") == 1 and log[-1]["step"] == 1
    assert read_metadata(run / "model.safetensors")["step"] == "1"
    assert (run / "notes.txt").read_text() == "mine"  # not a run file: left alone


def test_kill_leftovers_are_removed_and_the_checkpoint_pair_is_repaired(tmp_path, monkeypatch):
    from sair_train import runfolder

    _image(tmp_path / "d" / "a.png")
    run = tmp_path / "run"
    args = [str(tmp_path / "d"), *TRAIN, "-o", str(run), "--ckpt-every", "1"]
    assert invoke(train_cli, *args, "--max-steps", "1").exit_code == 0
    old_model = (run / "model.safetensors").read_bytes()
    # A SIGKILL between the two renames of the next checkpoint, and temp files of a kill mid-write
    real = os.replace

    def dies_after_the_commit_point(src, dst):
        real(src, dst)
        if Path(dst).name == "state.pt":
            raise SystemExit("killed")

    monkeypatch.setattr(runfolder.os, "replace", dies_after_the_commit_point)
    with pytest.raises(SystemExit):
        runfolder.commit_checkpoint(run, {**load_state(run), "step": 7},
                                    lambda tmp: Path(tmp).write_bytes(b"the step 7 model"))
    monkeypatch.setattr(runfolder.os, "replace", real)
    assert load_state(run)["step"] == 7 and (run / "model.safetensors").read_bytes() == old_model
    assert list(run.glob(".model.safetensors.*.tmp.safetensors"))  # the kill's leftover
    (run / ".state.pt.abc123.tmp.pt").write_bytes(b"half a state")
    r = invoke(train_cli, "--resume", str(run), "--max-steps", "7", "--no-progress")
    assert r.exit_code == 0, r.stderr
    assert not [p.name for p in run.iterdir() if ".tmp" in p.name]
    assert read_metadata(run / "model.safetensors")["step"] == str(load_state(run)["step"]) == "7"


def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_start(tmp_path):
    _image(tmp_path / "d" / "a.png")
    run = tmp_path / "run"
    assert invoke(train_cli, str(tmp_path / "d"), *TRAIN, "-o", str(run), "--max-steps", "1").exit_code == 0
    (run / "state.pt").unlink()
    (run / "model.safetensors").unlink()
    (run / "log.jsonl").write_text((run / "log.jsonl").read_text().splitlines()[0] + "\n")
    r = invoke(train_cli, "--resume", str(run), "--no-progress", "--max-steps", "2")
    assert r.exit_code == 0, r.stderr
    assert "from step 0" in r.stderr and load_state(run)["step"] == 2


def test_training_images_that_cannot_be_read_are_named_and_all_corrupt_is_an_error(tmp_path):
    d = tmp_path / "d"
    _image(d / "good.png")
    (d / "broken.png").write_bytes(b"not an image")
    r = invoke(train_cli, str(d), *TRAIN, "-o", str(tmp_path / "r1"), "--max-steps", "1")
    assert r.exit_code == 0 and "broken.png" in r.stderr
    (d / "good.png").write_bytes(b"\x89PNG corrupt too")
    r = invoke(train_cli, str(d), *TRAIN, "-o", str(tmp_path / "r2"), "--max-steps", "1")
    one_line_error(r, 2, "none of the 2 training images")
    assert not (tmp_path / "r2").exists()


# ---- 5: bad checkpoints and manifests are one line, exit 3 ----------------------------------
def _rewrite_meta(src: str, dst: Path, **changes) -> Path:
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(src, framework="numpy") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    cfg = json.loads(meta["config"])
    for k, v in changes.items():
        if k == "config":
            meta["config"] = v
        elif k.startswith("cfg_"):
            cfg.update(v)
            meta["config"] = json.dumps(cfg)
        else:
            meta[k] = v
    save_file(tensors, str(dst), metadata=meta)
    return dst


BAD_CHECKPOINTS = {
    "version_not_int": dict(format_version="one"),
    "unknown_key": dict(cfg_x={"from_a_newer_release": 1}),
    "bad_json": dict(config="{not json"),
    "bad_fill": dict(cfg_x={"fill": "bogus"}),
    "widths": dict(cfg_x={"app": {"in_channels": 4, "widths": [16, 16, 32], "res_blocks": 1,
                                  "dilation": 2, "norm": "batch"}}),
}


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
def test_bad_checkpoints_are_one_line_exit_3(case, tiny_checkpoint, pair, tmp_path):
    bad = _rewrite_meta(tiny_checkpoint, tmp_path / "bad.safetensors", **BAD_CHECKPOINTS[case])
    img, msk = pair
    one_line_error(invoke(inpaint_cli, img, msk, "-o", tmp_path / "o.png", "--model", bad, "-q"), 3, str(bad))
    one_line_error(invoke(export_cli, bad, "-o", tmp_path / "export"), 3, str(bad))
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "export").exists()


def _fake_export(tmp_path: Path, **changes) -> Path:
    from sair_deploy.model.config import get_config

    d = tmp_path / "export"
    d.mkdir()
    manifest = {"format": "sair-export", "format_version": 1, "config": get_config("sair-tiny").to_dict(),
                "graphs": {"query": {"files": {"fp32": ["query.onnx"]}}}, "sha256": {}, "runtime": {}}
    manifest.update(changes)
    manifest = {k: v for k, v in manifest.items() if v is not None}
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d


@pytest.mark.parametrize("changes", [
    {"format_version": "1"}, {"format_version": 1.5}, {"graphs": None}, {"graphs": {}},
    {"config": {"from_a_newer_release": True}}, {"config": {"fill": "bogus"}}, {"sha256": None},
])
def test_bad_manifests_are_one_line_exit_3(changes, pair, tmp_path):
    export = _fake_export(tmp_path, **changes)
    img, msk = pair
    r = invoke(inpaint_cli, img, msk, "-o", tmp_path / "o.png", "--model", export, "--backend", "onnx")
    one_line_error(r, 3, "manifest.json")


# ---- 5, 9: outputs are checked before any work -----------------------------------------------
def test_unwritable_outputs_are_refused_before_loading_the_model(pair, tmp_path):
    img, msk = pair
    missing_model = tmp_path / "none.safetensors"  # loading it would fail with exit 3
    one_line_error(invoke(inpaint_cli, img, msk, "-o", "/proc/x.png", "--model", missing_model), 2, "/proc")
    one_line_error(invoke(inpaint_cli, img, msk, "-o", tmp_path / "o.xyz", "--model", missing_model),
                   2, "extension")
    one_line_error(invoke(inpaint_cli, img, msk, "-o", tmp_path / "no" / "o.png", "--model", missing_model),
                   2, "does not exist")
    folder = tmp_path / "existing.png"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep")
    one_line_error(invoke(inpaint_cli, img, msk, "-o", folder, "--force", "--model", missing_model),
                   2, "is a folder")
    assert (folder / "keep.txt").read_text() == "keep"
    one_line_error(invoke(inpaint_cli, img, msk, "-o", img, "--force", "--model", missing_model), 2,
                   "one of the inputs")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(pair, tmp_path, tiny_checkpoint):
    img, msk = pair
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        one_line_error(invoke(inpaint_cli, img, msk, "-o", ro / "o.png", "--model", tiny_checkpoint), 2,
                       "cannot write")
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("scale", ["1e308", "5000", "1e20"])
def test_absurd_scales_are_refused_before_any_work(pair, tmp_path, scale):
    img, msk = pair
    r = invoke(inpaint_cli, img, msk, "-o", tmp_path / "o.png", "--scale", scale,
               "--model", tmp_path / "none.safetensors")
    one_line_error(r, 2, "--scale")


def test_scale_too_large_for_the_format(pair, tmp_path, tiny_checkpoint):
    img, msk = pair  # 28 px wide: scale 600 gives 16800 px, more than WebP holds
    one_line_error(invoke(inpaint_cli, img, msk, "-o", tmp_path / "o.webp", "--scale", "600",
                          "--model", tiny_checkpoint), 2, "16383")


def test_export_output_checked_before_loading_and_unwritable_place(tiny_checkpoint, tmp_path):
    one_line_error(invoke(export_cli, tiny_checkpoint, "-o", "/proc/sair-export"), 2, "/proc")
    f = tmp_path / "file"
    f.write_text("x")
    one_line_error(invoke(export_cli, tiny_checkpoint, "-o", f, "--force"), 2, "not a directory")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    one_line_error(invoke(export_cli, tiny_checkpoint, "-o", mine, "--force"), 2, "only an earlier export")
    assert (mine / "thesis.tex").read_text() == "years of work"


def test_a_killed_export_keeps_the_previous_one(tiny_checkpoint, tmp_path, monkeypatch):
    from sair_export import pipeline

    prev = tmp_path / "export"
    prev.mkdir()
    (prev / "manifest.json").write_text('{"earlier": "export"}')
    (prev / "query.onnx").write_bytes(b"earlier graph")
    before = snapshot(prev)

    def killed(model, out_dir, log=print):
        (Path(out_dir) / "semantic.onnx").write_bytes(b"half")
        raise KeyboardInterrupt()

    monkeypatch.setattr(pipeline, "export_all", killed)
    r = invoke(export_cli, tiny_checkpoint, "-o", prev, "--force")
    assert r.exit_code == 130 and r.stderr.strip() == "interrupted"
    assert snapshot(prev) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # nothing beside it


# ---- 3: EXIF orientation -----------------------------------------------------------------------
def test_exif_orientation_applied_to_image_and_mask_and_output_upright(tmp_path, tiny_checkpoint):
    rng = np.random.default_rng(0)
    stored = (rng.random((20, 32, 3)) * 255).astype(np.uint8)  # 32 wide, 20 high as stored
    img = save_u8(tmp_path / "phone.png", stored, orientation=6)
    shown = np.asarray(ImageOps.exif_transpose(Image.open(img)))  # 20 wide, 32 high as displayed
    assert shown.shape == (32, 20, 3)
    mask = np.zeros((32, 20), bool)
    mask[5:12, 3:9] = True
    msk = save_u8(tmp_path / "mask.png", mask.astype(np.uint8) * 255)  # drawn on the displayed photo
    out = tmp_path / "out.png"
    r = invoke(inpaint_cli, img, msk, "-o", out, "--model", tiny_checkpoint, "-q")
    assert r.exit_code == 0, r.stderr
    res = Image.open(out)
    assert res.size == (20, 32) and ORIENTATION not in res.getexif()
    assert np.array_equal(np.asarray(res)[~mask], shown[~mask])
    # a mask that carries an orientation itself is turned the same way
    msk6 = save_u8(tmp_path / "mask6.png", np.ascontiguousarray(np.rot90(mask, 1)).astype(np.uint8) * 255,
                   orientation=6)
    assert np.array_equal(read_mask(msk6, (32, 20)), mask)


def test_exif_orientation_on_a_square_photo_fills_the_right_region(tmp_path, tiny_checkpoint):
    rng = np.random.default_rng(1)
    stored = (rng.random((24, 24, 3)) * 255).astype(np.uint8)
    img = save_u8(tmp_path / "sq.png", stored, orientation=8)
    shown = np.asarray(ImageOps.exif_transpose(Image.open(img)))
    mask = np.zeros((24, 24), bool)
    mask[2:8, 14:22] = True  # not symmetric under rotation
    msk = save_u8(tmp_path / "m.png", mask.astype(np.uint8) * 255)
    out = tmp_path / "o.png"
    assert invoke(inpaint_cli, img, msk, "-o", out, "--model", tiny_checkpoint, "-q").exit_code == 0
    assert np.array_equal(np.asarray(Image.open(out))[~mask], shown[~mask])


# ---- 6, 10: folder mode ------------------------------------------------------------------------
def test_folder_mode_never_maps_two_inputs_to_one_output(pair, tmp_path, tiny_checkpoint):
    img, msk = pair
    images = tmp_path / "imgs"
    images.mkdir()
    Image.open(img).save(images / "a.png")
    Image.open(img).save(images / "a.jpg", quality=95)
    Image.open(img).save(images / "b.png")
    out = tmp_path / "out"
    for force in ([], ["--force"]):
        r = invoke(inpaint_cli, images, msk, "-o", out, "--model", tiny_checkpoint, "-q", *force)
        assert r.exit_code == 0 and "3 of 3" in r.stderr, r.stderr
        assert sorted(p.name for p in out.iterdir()) == ["a_jpg.png", "a_png.png", "b.png"]
        a_png = np.asarray(Image.open(out / "a_png.png"))
        assert np.array_equal(a_png, np.asarray(Image.open(out / "b.png")))  # same input, same output
        if not force:  # the second run without --force: every output already exists
            r = invoke(inpaint_cli, images, msk, "-o", out, "--model", tiny_checkpoint, "-q")
            assert r.exit_code == 1 and "0 of 3" in r.stderr


def test_folder_mode_with_nothing_to_write_creates_no_folder(pair, tmp_path, tiny_checkpoint):
    img, _ = pair
    images, masks = tmp_path / "imgs", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    Image.open(img).save(images / "a.png")
    r = invoke(inpaint_cli, images, masks, "-o", tmp_path / "out", "--model", tiny_checkpoint, "-q")
    assert r.exit_code == 1 and "no mask named a" in r.stderr
    assert not (tmp_path / "out").exists()


# ---- 10: decompression bombs --------------------------------------------------------------------
def test_too_many_pixels_says_pixels_not_sides(tmp_path):
    big = tmp_path / "big.png"
    Image.new("1", (16000, 12000)).save(big)  # both sides allowed, 192 Mpx is not
    with pytest.raises(Exception) as exc:
        read_image(big)
    assert "Mpx" in str(exc.value) and "a side" not in str(exc.value)


# ---- 7: SIGTERM during a write --------------------------------------------------------------------
def test_sigterm_during_the_write_leaves_no_temp_file(pair, tmp_path, tiny_checkpoint):
    img, msk = pair
    out = tmp_path / "out.png"
    code = f"""
import os, signal, time, sys
from PIL import Image
def save(self, fp, *a, **k):
    open(fp, 'wb').write(b'partial')
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
Image.Image.save = save
sys.argv = ['sair-inpaint', {str(img)!r}, {str(msk)!r}, '-o', {str(out)!r}, '--model', {tiny_checkpoint!r}, '-q']
from sair_deploy.cli import main
main()
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 143 and p.stderr.strip() == "terminated", p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["in.png", "mask.png"]


# ---- property-based: readers and the CLI -------------------------------------------------------
MODES = ["RGB", "RGBA", "L", "LA", "P", "I;16", "1"]


def _in_mode(a: np.ndarray, mode: str) -> Image.Image:
    im = Image.fromarray(a)
    if mode == "I;16":
        return Image.fromarray(np.asarray(im.convert("L"), dtype=np.uint16) * 257)
    return im.convert(mode)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=st.integers(1, 40), w=st.integers(1, 40), mode=st.sampled_from(MODES),
       orientation=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_reader_applies_orientation_in_every_mode(tmp_path, h, w, mode, orientation, seed):
    a = (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)
    path = tmp_path / f"p{seed}_{orientation}.png"
    im = _in_mode(a, mode)
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    im.save(path, exif=exif)
    if min(h, w) < 8:
        with pytest.raises(Exception, match="sides must be"):
            read_image(path)
        return
    out = read_image(path)
    shown = ImageOps.exif_transpose(Image.open(path))
    assert out.shape == (shown.size[1], shown.size[0], 3) and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1
    if mode == "RGB":
        assert np.array_equal((out * 255).round().astype(np.uint8), np.asarray(shown))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=st.integers(4, 36), w=st.integers(4, 36), orientation=st.integers(1, 8),
       mask_kind=st.sampled_from(["same", "double", "other_aspect", "empty", "full", "corrupt"]),
       scale=st.one_of(st.just(1.0), st.floats(1.0, 3.0), st.floats(-2.0, 1.0), st.just(1e308)),
       seed=st.integers(0, 2**16))
def test_cli_succeeds_with_the_documented_output_or_fails_in_one_line(
        tmp_path, tiny_checkpoint, h, w, orientation, mask_kind, scale, seed):
    rng = np.random.default_rng(seed)
    folder = tmp_path / f"case{seed}_{orientation}_{mask_kind}_{h}x{w}"
    folder.mkdir(exist_ok=True)
    a = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    img = save_u8(folder / "i.png", a, orientation=orientation)
    sh, sw = (w, h) if orientation >= 5 else (h, w)  # as displayed
    shown = np.asarray(ImageOps.exif_transpose(Image.open(img)))
    mask = rng.random((sh, sw)) < 0.2
    mask[sh // 2, sw // 2] = True
    if mask_kind == "empty":
        mask[:] = False
    if mask_kind == "full":
        mask[:] = True
    m_arr = mask.astype(np.uint8) * 255
    if mask_kind == "double":
        m_arr = np.repeat(np.repeat(m_arr, 2, 0), 2, 1)
    if mask_kind == "other_aspect":
        m_arr = np.zeros((sh + 9, sw), np.uint8)
    msk = save_u8(folder / "m.png", m_arr)
    if mask_kind == "corrupt":
        msk.write_bytes(msk.read_bytes()[:30])
    out = folder / "o.png"
    r = invoke(inpaint_cli, img, msk, "-o", out, "--scale", repr(scale), "--model", tiny_checkpoint, "-q")
    if r.exit_code != 0:
        lines = r.stderr.strip().splitlines()
        assert r.exit_code in (2, 3) and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
        assert not out.exists()
        expected_failure = (min(h, w) < 8 or mask_kind in ("other_aspect", "full", "corrupt")
                            or not scale >= 1 or scale > 1e6)
        assert expected_failure, r.stderr
        return
    assert min(h, w) >= 8 and mask_kind in ("same", "double", "empty") and 1 <= scale <= 3
    res = np.asarray(Image.open(out))
    assert res.shape == (int(round(scale * sh)), int(round(scale * sw)), 3)
    if scale == 1.0:
        assert np.array_equal(res[~mask], shown[~mask])
