"""The paper's recipe: where SIR is supervised, which defaults a config trains with, how CLIP
weights load, and what happens without pretrained weights."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from sair_deploy.model.config import get_config, recipe_for  # noqa: E402
from sair_deploy.model.sair import SAIR  # noqa: E402
from sair_train.cli import cli  # noqa: E402
from sair_train.data import InpaintingDataset, SampleSpec  # noqa: E402
from sair_train.trainer import TrainArgs, TrainStep, resolve_recipe, run_training  # noqa: E402


def _image(path: Path, size: int = 48, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([x, y, 0.5 + 0.3 * np.sin(6 * x + seed)], -1)
    img = img + 0.05 * rng.random((size, size, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(path)
    return path


def _args(data: Path, out: Path, **kw) -> TrainArgs:
    base = dict(data=[str(data)], out=str(out), config="sair-tiny", size=32, queries=64,
                batch=2, val_count=0, repeat=2, lr=1e-3, log_every=1, ckpt_every=0, val_every=0,
                progress=False, device="cpu", seed=1)
    base.update(kw)
    return TrainArgs(**base)


def test_sir_is_trained_where_air_reads_it():
    """The semantic loss queries SIR at the coordinates and with the cell that AIR's own reads use
    (input pixel centres around the queries, the input pixel's cell), never at latent centres."""
    torch.manual_seed(0)
    model = SAIR(get_config("sair-tiny"))
    spec = SampleSpec(size=32, queries=40, semantic_target=True, sem_max_side=64, crop="whole")
    ds = InpaintingDataset([Path("unused")], spec)
    ds._read = lambda index, rng: ((np.random.default_rng(index).random((40, 40, 3)) * 255)  # noqa
                                   .astype(np.uint8), 0)
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    batch.pop("skipped")

    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = model.sir.forward

    def record(embedding, holes, coord, cell):
        calls.append((coord.detach().clone(), torch.as_tensor(cell).detach().clone()))
        return original(embedding, holes, coord, cell)

    model.sir.forward = record
    step = TrainStep(model, sem_weight=1.0, stage="joint", sem_queries=16)
    losses = step(batch)
    assert "sem" in losses and len(calls) == 1
    train_coord, train_cell = calls.pop()

    feats = model.encode(batch["image"], batch["mask"], batch["sem_image"], batch["sem_valid"])
    model.query(feats, batch["coord"], batch["cell"].unsqueeze(1))  # the literal AIR path
    assert len(calls) == 1
    air_coord, air_cell = calls.pop()
    # 16 reads = the 4 pixel neighbours of each of the first 4 queries, in AIR's order
    assert train_coord.shape == (2, 16, 2)
    assert torch.equal(train_coord, air_coord[:, :16])
    assert torch.equal(train_cell.expand(2, 1, 2), air_cell.expand(2, 1, 2))
    assert torch.allclose(train_cell.flatten(), torch.tensor([2 / 32, 2 / 32]))


def test_config_recipes_and_overrides():
    paper = resolve_recipe(TrainArgs(config="sair-b16"))
    assert (paper.recipe, paper.size, paper.crop, paper.scale_prob, paper.hole_fraction) == \
        ("paper", 256, "whole", 0.0, 0.0)
    assert (paper.batch, paper.epochs, paper.lr, paper.lr_step, paper.lr_gamma) == \
        (16, 200, 1e-4, 100, 0.5)
    assert resolve_recipe(TrainArgs(config="sair-small")).size == recipe_for("sair-small").size
    sr = resolve_recipe(TrainArgs(config="sair-b16", recipe="liif-sr", hole_fraction=0.25))
    assert (sr.crop, sr.scale_max, sr.scale_prob, sr.hole_fraction) == ("zoom", 4.0, 0.5, 0.25)
    # the paper's samples: scale 1, the whole image, uniform pixels
    assert get_config("sair-b16").semantic.max_side == 256


def test_whole_image_samples_are_the_image_resized(tmp_path):
    img = _image(tmp_path / "a.png", size=64)
    ds = InpaintingDataset([img], SampleSpec(size=32, queries=32, crop="whole", hflip=False,
                                             scale_max=1.0, hole_fraction=0.0))
    s = ds[0]
    ref = np.asarray(Image.open(img).resize((32, 32), Image.Resampling.BICUBIC), np.float32) / 255
    assert np.allclose(s["image"].permute(1, 2, 0).numpy(), ref)
    assert torch.allclose(s["cell"], torch.tensor([2 / 32, 2 / 32]))


def test_without_pretrained_clip_the_encoder_stays_frozen_and_the_semantic_loss_is_off(tmp_path):
    _image(tmp_path / "d" / "a.png")
    torch.manual_seed(1)
    summary, model = run_training(_args(tmp_path / "d", tmp_path / "run", max_steps=3))
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[0]["semantic_loss"] is False and log[0]["clip_pretrained"] is False
    assert all("sem" not in r for r in log if "loss" in r)
    torch.manual_seed(1)
    init = SAIR(get_config("sair-tiny")).state_dict()
    after = model.state_dict()
    assert all(torch.equal(init[k], after[k]) for k in init if k.startswith("semantic."))
    assert any(not torch.equal(init[k], after[k]) for k in init if k.startswith("sir."))
    # a stage that needs the semantic target is refused in one line naming both ways out
    res = CliRunner().invoke(cli, [str(tmp_path / "d"), "-o", str(tmp_path / "r2"), "--config",
                                   "sair-tiny", "--stage", "sir-then-air", "--size", "32",
                                   "--no-progress", "--device", "cpu"])
    assert res.exit_code == 2
    assert "--no-semantic" in res.output and "--clip-weights" in res.output
    assert res.output.strip().count("\n") == 0


def test_with_pretrained_clip_the_semantic_loss_is_on(tmp_path):
    from safetensors.torch import save_file

    from sair_deploy.model.checkpoint import read_metadata
    from sair_deploy.model.semantic import build_visual

    _image(tmp_path / "d" / "a.png")
    vit = build_visual(get_config("sair-tiny").semantic)
    save_file({f"visual.{k}": v.contiguous() for k, v in vit.state_dict().items()},
              str(tmp_path / "clip.safetensors"))
    run_training(_args(tmp_path / "d", tmp_path / "run", max_steps=2,
                       clip_weights=str(tmp_path / "clip.safetensors")))
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[0]["semantic_loss"] is True
    assert all("sem" in r for r in log if "loss" in r)
    assert read_metadata(tmp_path / "run" / "model.safetensors")["clip_pretrained"] == "true"


def test_openai_torchscript_archive_loads_through_clip_weights(tmp_path):
    """OpenAI's file layout: a TorchScript archive of the whole CLIP model (``visual.*``), half
    precision. It loads as an archive (no pickle) and gives the features of its state dict."""
    from sair_deploy.model.semantic import SemanticEncoder, build_visual, is_torchscript
    from sair_train.trainer import build_model

    cfg = get_config("sair-tiny")
    torch.manual_seed(3)
    vit = build_visual(cfg.semantic)

    class CLIP(torch.nn.Module):  # OpenAI's archive holds the whole model; visual is a child
        def __init__(self):
            super().__init__()
            self.visual = vit
            self.logit_scale = torch.nn.Parameter(torch.ones([]))

        def encode_image(self, x):
            return self.visual(x)

    model = CLIP().half()
    side = cfg.semantic.native_size
    with warnings.catch_warnings():  # tracing's deprecation and shape-check notices
        warnings.simplefilter("ignore")
        scripted = torch.jit.trace_module(model, {"encode_image":
                                                  torch.rand(1, 3, side, side).half()})
    path = tmp_path / "ViT-B-16.pt"
    scripted.save(str(path))
    assert is_torchscript(path)

    loaded = build_model(TrainArgs(config="sair-tiny", clip_weights=str(path)))
    ref = SemanticEncoder(cfg.semantic)
    ref.visual.load_state_dict({k: v.float() for k, v in vit.state_dict().items()})
    x = torch.rand(2, 3, 64, 48)
    with torch.no_grad():
        assert torch.equal(loaded.semantic(x), ref(x))
    # and through the command line
    _image(tmp_path / "d" / "a.png")
    res = CliRunner().invoke(cli, [str(tmp_path / "d"), "-o", str(tmp_path / "run"), "--config",
                                   "sair-tiny", "--clip-weights", str(path), "--size", "32",
                                   "--batch", "2", "--queries", "32", "--max-steps", "1",
                                   "--val-count", "0", "--no-progress", "--device", "cpu"])
    assert res.exit_code == 0, res.output


def test_bf16_autocast_and_channels_last_train(tmp_path):
    _image(tmp_path / "d" / "a.png")
    summary, _ = run_training(_args(tmp_path / "d", tmp_path / "run", max_steps=2, amp="bf16",
                                    channels_last=True, no_semantic=True))
    assert summary["step"] == 2 and np.isfinite(summary["loss"])
