"""sair-train: the loss goes down, resume is exact, bad checkpoints are reported, DDP syncs."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from sair_deploy.errors import ModelError  # noqa: E402
from sair_train.cli import cli  # noqa: E402
from sair_train.data import InpaintingDataset, SampleSpec, list_images, split_files  # noqa: E402
from sair_train.trainer import (TrainArgs, build_model, load_state, run_training,  # noqa: E402
                                train)


def _image(path: Path, size: int = 48, seed: int = 0) -> Path:
    """A smooth colour image with a few flat shapes: easy to learn in a few dozen steps."""
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([x, y, 0.5 + 0.3 * np.sin(6 * x + seed)], -1)
    img[size // 4: size // 2, size // 4: size // 2] = (0.9, 0.2, 0.1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((img * 255).astype(np.uint8)).save(path)
    return path


def _args(data: Path, out: Path, **kw) -> TrainArgs:
    base = dict(data=[str(data)], out=str(out), config="sair-tiny", size=32, queries=128,
                batch=2, scale_max=2.0, val_count=0, repeat=2, lr=1e-3, log_every=1,
                ckpt_every=0, val_every=0, progress=False, device="cpu", seed=1)
    base.update(kw)
    return TrainArgs(**base)


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_data_split_listing_and_unreadable_images(tmp_path):
    for i in range(5):
        _image(tmp_path / "d" / f"sub{i % 2}" / f"{i}.png", seed=i)
    (tmp_path / "d" / "broken.png").write_bytes(b"not an image")
    files = list_images([tmp_path / "d"])
    assert len(files) == 6
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(str(f.relative_to(tmp_path)) for f in files) + "\n")
    assert list_images([lst]) == files
    assert split_files(files, 2, 0) == split_files(files, 2, 0)
    tr, va = split_files(files, 2, 0)
    assert len(va) == 2 and not set(tr) & set(va)
    ds = InpaintingDataset(files, SampleSpec(size=32, queries=64, scale_max=3, scale_prob=1.0,
                                             semantic_target=True), repeat=2)
    skipped = 0
    for i in range(len(ds)):
        s = ds[i]
        skipped += int(s["skipped"])
        assert s["image"].shape == (3, 32, 32) and s["coord"].shape == (64, 2)
        assert s["gt"].shape == (64, 3) and float(s["cell"][0]) <= 2 / 32
        assert s["coord"].abs().max() < 1 and "sem_full" in s
    assert skipped >= 2  # the broken file, drawn twice per epoch, never crashed
    a, b = ds[3], ds[3]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_few_dozen_steps_lower_the_loss(tmp_path):
    img = _image(tmp_path / "d" / "a.png")
    train(_args(img.parent, tmp_path / "run", max_steps=30, sem_weight=0.0))
    rgb = [r["rgb"] for r in _log(tmp_path / "run") if "rgb" in r]
    assert len(rgb) == 30
    assert np.mean(rgb[-8:]) < 0.6 * np.mean(rgb[:4]), rgb


def test_resume_continues_exactly(tmp_path):
    img = _image(tmp_path / "d" / "a.png")
    _image(tmp_path / "d" / "b.png", seed=2)
    full, m_full = run_training(_args(img.parent, tmp_path / "full", max_steps=5))
    half, _ = run_training(_args(img.parent, tmp_path / "cut", max_steps=3))
    assert half["step"] == 3
    resumed, m_res = run_training(_args(img.parent, tmp_path / "cut", max_steps=5),
                                  resume=str(tmp_path / "cut"))
    assert resumed["step"] == full["step"] == 5 and resumed["epoch"] == full["epoch"]
    a, b = load_state(tmp_path / "full"), load_state(tmp_path / "cut" / "state.pt")
    assert a["step"] == b["step"] and a["batch_in_epoch"] == b["batch_in_epoch"]
    assert a["scheduler"] == b["scheduler"]
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert sa["step"] == sb["step"]
        assert torch.allclose(sa["exp_avg"], sb["exp_avg"], atol=1e-6)
        assert torch.allclose(sa["exp_avg_sq"], sb["exp_avg_sq"], atol=1e-8)
    for (k, va), vb in zip(m_full.state_dict().items(), m_res.state_dict().values()):
        assert torch.allclose(va, vb, atol=1e-6), k


def test_truncated_checkpoint_is_reported(tmp_path):
    img = _image(tmp_path / "d" / "a.png")
    train(_args(img.parent, tmp_path / "run", max_steps=2))
    state = tmp_path / "run" / "state.pt"
    data = state.read_bytes()
    state.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated or corrupt"):
        load_state(tmp_path / "run")
    res = CliRunner().invoke(cli, ["--resume", str(tmp_path / "run")])
    assert res.exit_code == 3
    assert res.output.strip().count("\n") == 0 and "truncated or corrupt" in res.output


def test_cli_trains_and_reports_missing_clip_weights(tmp_path):
    img = _image(tmp_path / "d" / "a.png")
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, [str(img.parent), "-o", str(out), "--config", "sair-tiny",
                                   "--size", "32", "--batch", "2", "--queries", "64",
                                   "--max-steps", "2", "--no-progress", "--val-count", "0",
                                   "--no-semantic"])
    assert res.exit_code == 0, res.output
    from sair_deploy.model.checkpoint import load_checkpoint

    assert not load_checkpoint(out / "model.safetensors").cfg.use_semantic
    res = CliRunner().invoke(cli, [str(img.parent), "-o", str(tmp_path / "r2"), "--config",
                                   "sair-b16", "--clip-weights", str(tmp_path / "none.bin")])
    assert res.exit_code != 0 and "--clip-weights" in res.output
    assert res.output.strip().count("\n") == 0


def _ddp_worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    # The LIIF ablation keeps the spawned processes from importing open_clip (seconds each).
    _, model = run_training(_args(Path(data), Path(out), max_steps=2, batch=4, no_semantic=True))
    torch.save(model.state_dict(), Path(out) / f"rank{rank}.pt")


def test_ddp_two_processes_keep_weights_in_sync(tmp_path):
    for i in range(4):
        _image(tmp_path / "d" / f"{i}.png", seed=i)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    out.mkdir()
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, str(tmp_path / "d"), str(out)),
                                nprocs=2, join=True)
    a = torch.load(out / "rank0.pt", weights_only=True)
    b = torch.load(out / "rank1.pt", weights_only=True)
    for k in a:
        if "running" in k or "num_batches" in k:
            continue  # BatchNorm statistics are per process (no SyncBatchNorm)
        assert torch.equal(a[k], b[k]), k
    start = _log(out)[0]
    assert start["world"] == 2
    torch.manual_seed(1)
    init = build_model(_args(tmp_path / "d", out, no_semantic=True)).state_dict()
    assert any(not torch.equal(a[k], init[k]) for k in a)  # training did change the weights


def _clip_file(path: Path, seed: int = 0) -> Path:
    """Random 'pretrained' weights for sair-tiny's ViT, as an open_clip state dict file."""
    from safetensors.torch import save_file

    from sair_deploy.model.config import get_config
    from sair_deploy.model.semantic import build_visual

    torch.manual_seed(seed)
    vit = build_visual(get_config("sair-tiny").semantic)
    save_file({f"visual.{k}": v.contiguous() for k, v in vit.state_dict().items()}, str(path))
    return path


def test_sir_then_air_freezes_sir_in_the_second_stage(tmp_path):
    img = _image(tmp_path / "d" / "a.png")
    # one image, repeat 2, batch 2: one step per epoch; SIR alone for 2 epochs, then AIR.
    kw = dict(stage="sir-then-air", sir_epochs=2,
              clip_weights=str(_clip_file(tmp_path / "clip.safetensors")))
    torch.manual_seed(1)
    init = build_model(_args(img.parent, tmp_path)).state_dict()
    _, first = run_training(_args(img.parent, tmp_path / "a", epochs=2, **kw))
    summary, both = run_training(_args(img.parent, tmp_path / "b", epochs=4, **kw))
    stages = [r["stage"] for r in _log(tmp_path / "b") if "stage" in r]
    assert stages == ["sir", "sir", "air", "air"] and summary["epoch"] == 4
    a, b = first.state_dict(), both.state_dict()
    for k in a:
        if k.startswith("sir."):
            assert not torch.equal(a[k], init[k]) and torch.equal(a[k], b[k]), k
        if k.startswith("air.") and "weight" in k:
            assert torch.equal(a[k], init[k]) and not torch.equal(b[k], init[k]), k


def test_resume_without_out_uses_the_runs_folder(tmp_path, monkeypatch):
    img = _image(tmp_path / "d" / "a.png")
    train(_args(img.parent, tmp_path / "run", max_steps=1))
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["--resume", str(tmp_path / "run"), "--max-steps", "2",
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    assert load_state(tmp_path / "run")["step"] == 2 and not (tmp_path / "runs").exists()


def test_patch_ssim_is_scikit_images():
    from skimage.metrics import structural_similarity

    from sair_train.trainer import patch_ssim

    rng = np.random.default_rng(0)
    gt = rng.random((20, 20, 3))
    pred = np.clip(gt + 0.2 * rng.standard_normal(gt.shape), 0, 1)
    hole = np.zeros((20, 20, 1))
    hole[5:15, 3:12] = 1
    composited = pred * hole + gt * (1 - hole)
    ref = structural_similarity(composited, gt, data_range=1, win_size=7, channel_axis=-1)
    t = lambda a: torch.from_numpy(a.reshape(1, -1, a.shape[-1]))  # noqa: E731
    assert abs(float(patch_ssim(t(pred), t(gt), t(hole))) - ref) < 1e-6


def test_fine_tune_from_a_checkpoint_with_another_fill_and_an_ssim_loss(tmp_path):
    from sair_deploy.model.checkpoint import load_checkpoint, read_config

    for i in range(3):
        _image(tmp_path / "d" / f"{i}.png", seed=i)
    first = tmp_path / "first"
    train(_args(tmp_path / "d", first, max_steps=2, no_semantic=True, fill="pushpull",
                residual=True))
    # the patch samples come along only when the SSIM loss is on
    spec = SampleSpec(size=32, queries=16, patch=12)
    s = InpaintingDataset(list_images([tmp_path / "d"]), spec)[0]
    assert s["patch_coord"].shape == (144, 2) and s["patch_gt"].shape == (144, 3)
    assert s["patch_mask"].shape == (144, 1) and s["patch_mask"].sum() > 0

    res = CliRunner().invoke(cli, [str(tmp_path / "d"), "--init", str(first / "model.safetensors"),
                                   "--fill", "onion", "--ssim-weight", "0.5", "--patch", "12",
                                   "--size", "32", "--queries", "64", "--batch", "2",
                                   "--max-steps", "3", "--log-every", "1", "--val-count", "0", "--no-progress",
                                   "--device", "cpu", "-o", str(tmp_path / "ft")])
    assert res.exit_code == 0, res.output
    cfg = read_config(tmp_path / "ft" / "model.safetensors")
    assert cfg.fill == "onion" and cfg.residual and not cfg.use_semantic
    steps = [r for r in _log(tmp_path / "ft") if "ssim" in r]
    assert steps and all(0 <= r["ssim"] <= 2 for r in steps)
    # the fine-tune started from the first run's weights, not from scratch
    a = load_checkpoint(first / "model.safetensors").state_dict()
    b = build_model(_args(tmp_path / "d", tmp_path / "x", init=str(first / "model.safetensors"),
                          fill="onion")).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
