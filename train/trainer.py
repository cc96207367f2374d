"""The training loop: losses, stages, optimiser and schedule, checkpoints, resume, DDP.

One process or many (``torchrun``): the same code. Each process draws its own shard of every
epoch's permutation; ``batch`` is the global batch size. A run folder holds

* ``model.safetensors``: the model as a sair-deploy checkpoint (what ``sair-inpaint`` loads),
* ``state.pt``: everything needed to continue exactly (weights, optimiser, scheduler, step,
  epoch, position in the epoch, RNG states, arguments); read with ``weights_only=True``,
* ``log.jsonl``: one JSON object per logged step and per validation.

Both files are written as one checkpoint (temp files, then renames with signals held back;
see :mod:`.runfolder`), so a run killed mid-write keeps the previous checkpoint. A new run
refuses a folder that holds an earlier run unless ``force``; ``--resume`` refuses options that
differ from the run's.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from sair_deploy.coords import make_coord
from sair_deploy.model.checkpoint import (checkpoint_writer, read_config, read_metadata,
                                          save_checkpoint)
from sair_deploy.model.config import (SAIRConfig, TrainingRecipe, get_config, get_recipe,
                                      recipe_for)
from sair_deploy.model.fast import FastSAIR
from sair_deploy.model.liif import ensemble, gather_latents, local_neighbours
from sair_deploy.model.sair import SAIR, Features, pixel_cell

from .data import (InpaintingDataset, SampleSpec, ValidationDataset, list_images, split_files)
from .masks import MaskFolder
from .runfolder import (StopRequest, Stopped, check_run_folder, commit_checkpoint,  # noqa: F401
                        load_state, readable_images, repair_model_file, reset_run_folder,
                        resume_run)

STAGES = ("joint", "sir-then-air")


@dataclass
class TrainArgs:
    """Every option of a run (saved in the state file; ``--resume`` reuses them)."""

    data: list[str] = field(default_factory=list)
    out: str | None = None  # run folder; runs/sair when not given (resume: the run's own)
    config: str = "sair-small"
    no_semantic: bool = False
    clip_weights: str | None = None
    clip_cache: str | None = None
    train_clip: bool | None = None  # True: train the ViT too (None/False: frozen, as the paper)
    masks: str | None = None
    # None below: the training recipe's value (``recipe``, or the config's own recipe)
    recipe: str | None = None
    size: int | None = None
    crop: str | None = None
    queries: int | None = None
    scale_max: float | None = None
    scale_prob: float | None = None
    hole_fraction: float | None = None
    color_jitter: float = 0.0
    repeat: int = 1
    val_count: int = 4
    val: list[str] = field(default_factory=list)  # validation images from elsewhere (no split)
    batch: int | None = None
    epochs: int | None = None
    lr: float | None = None
    lr_step: int | None = None  # epochs between halvings
    lr_gamma: float | None = None
    sem_weight: float = 1.0
    sem_queries: int = 1024  # SIR read points per image supervised by the semantic loss
    amp: str = "off"  # "bf16": bfloat16 autocast (GPUs; CPUs with bf16 support work too)
    channels_last: bool = False  # the AppEncoder's convolutions in NHWC memory layout
    ssim_weight: float = 0.0  # weight of (1 - SSIM) on a dense patch over a hole (0 = off)
    patch: int = 32  # side of that patch, in full-res pixels
    init: str | None = None  # start from this checkpoint's weights and config (fine-tuning)
    fill: str | None = None  # the classical fill under the holes (None: the config's)
    residual: bool | None = None  # AIR predicts a residual over the fill (None: the config's)
    base: str | None = None  # what the residual is added to at scales > 1 (None: the config's)
    sr_prob: float = 0.0  # fraction of super-resolution samples (known pixels, downsampled input)
    sr_holes: float = 0.0  # fraction of those that also have holes
    stage: str = "joint"
    sir_epochs: int = 50  # first stage of sir-then-air
    seed: int = 0
    workers: int = 0
    ckpt_every: int = 500  # steps
    log_every: int = 10  # steps
    val_every: int = 1  # epochs
    max_minutes: float | None = None
    max_steps: int | None = None
    device: str = "auto"
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


RECIPE_FIELDS = tuple(f.name for f in dataclasses.fields(TrainingRecipe) if f.name != "name")
AMP_MODES = ("off", "bf16")


def resolve_recipe(args: TrainArgs) -> TrainArgs:
    """``args`` with every option left at ``None`` taken from the training recipe: ``--recipe``,
    or the recipe of the model's config (``--init``: the checkpoint's config)."""
    if args.recipe is None:
        name = read_config(args.init).name if args.init else args.config
        recipe = recipe_for(name)
    else:
        recipe = get_recipe(args.recipe)
    filled = {k: getattr(recipe, k) for k in RECIPE_FIELDS if getattr(args, k) is None}
    return dataclasses.replace(args, recipe=recipe.name, **filled)


# ---- distributed -----------------------------------------------------------------------------
def _dist_setup(device: str) -> tuple[int, int, torch.device]:
    """Initialise the process group under torchrun (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(f"cuda:{local}" if device == "cuda" else device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return rank, world, dev


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


# ---- model -----------------------------------------------------------------------------------
def build_model(args: TrainArgs) -> SAIR:
    """The configured model; CLIP's pretrained weights loaded when the config names them.

    With ``args.init`` the model is that checkpoint's (its config and weights): fine-tuning.
    """
    if args.init:
        from sair_deploy.model.checkpoint import load_checkpoint

        start = load_checkpoint(args.init).float()
        cfg = _override(start.cfg, args)
        if cfg == start.cfg:
            return start
        model = SAIR(cfg)  # the fill has no weights: the same weights fit the new config
        model.load_state_dict(start.state_dict())
        return model
    cfg: SAIRConfig = get_config(args.config)
    if args.no_semantic:
        cfg = cfg.replace(use_semantic=False)
    model = SAIR(_override(cfg, args))
    if cfg.use_semantic and (cfg.semantic.pretrained or args.clip_weights):
        from sair_deploy.model.semantic import load_pretrained_visual

        state = load_pretrained_visual(cfg.semantic, args.clip_weights, args.clip_cache)
        model.semantic.visual.load_state_dict(state)
    return model


def _override(cfg: SAIRConfig, args: TrainArgs) -> SAIRConfig:
    """The config with the fill options of the command line applied."""
    if args.base is not None and "base" not in {f.name for f in dataclasses.fields(cfg)}:
        raise ValueError("--base needs a model config with a 'base' field (bilinear/bicubic base "
                         "under the residual); this version of sair-deploy has none")
    changes = {k: getattr(args, k) for k in ("fill", "residual", "base")
               if getattr(args, k) is not None}
    return cfg.replace(**changes) if changes else cfg


def clip_pretrained(args: TrainArgs, cfg: SAIRConfig) -> bool:
    """Whether the model's CLIP tower starts from pretrained weights (the config's tag, a
    ``--clip-weights`` file, or an ``--init`` checkpoint that was trained from them)."""
    if not cfg.use_semantic:
        return False
    if args.clip_weights or (cfg.semantic.pretrained and not args.init):
        return True
    if args.init:
        return read_metadata(args.init).get("clip_pretrained") == "true" or \
            bool(read_config(args.init).semantic.pretrained)
    return False


def _train_clip(args: TrainArgs, model: SAIR) -> bool:
    """The CLIP tower trains only when asked (``--train-clip``); the paper keeps it frozen."""
    return bool(model.cfg.use_semantic and args.train_clip)


def semantic_loss_on(args: TrainArgs, model: SAIR) -> bool:
    """The semantic loss needs a fixed, meaningful target: a pretrained CLIP tower that stays
    frozen. A random tower as its own target (or a tower trained towards its own output) has a
    trivial collapse, so the loss is off then and SIR learns through AIR's L1 alone."""
    wanted = args.sem_weight > 0 or args.stage != "joint"  # SIR's own stage always uses it
    return bool(model.cfg.use_semantic and wanted and clip_pretrained(args, model.cfg)
                and not _train_clip(args, model))


def check_semantic_setup(args: TrainArgs, model: SAIR) -> str | None:
    """Refuse a run whose SIR stage would have no semantic target; return a note (or None) to
    print when the semantic loss is off although the model has a semantic branch."""
    if not model.cfg.use_semantic:
        return None
    if semantic_loss_on(args, model):
        return None
    if args.stage != "joint":
        raise ValueError("--stage sir-then-air trains SIR on the semantic loss, which needs "
                         "pretrained CLIP weights in a frozen tower: pass --clip-weights PATH "
                         "(without --train-clip), or --no-semantic for the LIIF ablation")
    why = ("no pretrained CLIP weights: the ViT stays a fixed random encoder"
           if not clip_pretrained(args, model.cfg) else
           "--train-clip: the ViT would chase its own output" if _train_clip(args, model)
           else "--sem-weight 0")
    return (f"note: semantic loss off ({why}); SIR learns through the L1 loss only. Pass "
            f"--clip-weights PATH for the paper's semantic loss, or --no-semantic for the "
            f"LIIF ablation")


def stage_at(args: TrainArgs, epoch: int) -> str:
    """``joint``, ``sir`` (first stage) or ``air`` (second stage, SIR frozen)."""
    if args.stage == "joint":
        return "joint"
    return "sir" if epoch < args.sir_epochs else "air"


def set_trainable(model: SAIR, args: TrainArgs, stage: str) -> None:
    """Freeze and unfreeze the parts each stage trains."""
    model.requires_grad_(False)
    sem = model.cfg.use_semantic
    if stage in ("joint", "air"):
        model.app_encoder.requires_grad_(True)
        model.air.requires_grad_(True)
    if sem and stage in ("joint", "sir"):
        model.sir.requires_grad_(True)
    if sem and stage == "joint" and _train_clip(args, model):
        model.semantic.requires_grad_(True)


class TrainStep(nn.Module):
    """The losses of one batch as a module, so DistributedDataParallel can wrap it."""

    def __init__(self, model: SAIR, sem_weight: float, stage: str, ssim_weight: float = 0.0,
                 sem_queries: int = 1024):
        super().__init__()
        self.model, self.sem_weight, self.stage = model, sem_weight, stage
        self.ssim_weight, self.sem_queries = ssim_weight, sem_queries
        self.fast = FastSAIR(model)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        m = self.model
        use_sem = m.cfg.use_semantic
        losses: dict[str, Tensor] = {}
        if self.stage == "sir":
            emb, holes = m.encode_semantic(batch["sem_image"], batch["sem_valid"])
            feats = Features(emb, holes, batch["image"])
        else:
            feats = m.encode(batch["image"], batch["mask"], batch.get("sem_image"),
                             batch.get("sem_valid"))
            pred = self.fast.query_sparse(feats, batch["coord"], batch["cell"].unsqueeze(1))
            losses["rgb"] = F.l1_loss(pred, batch["gt"])
            if self.ssim_weight > 0 and "patch_coord" in batch:
                patch = self.fast.query_sparse(feats, batch["patch_coord"],
                                               batch["cell"].unsqueeze(1))
                losses["ssim"] = 1 - patch_ssim(patch, batch["patch_gt"], batch["patch_mask"])
        if use_sem and self.stage != "air" and "sem_full" in batch and \
                (self.sem_weight > 0 or self.stage == "sir"):
            losses["sem"] = self.semantic_loss(feats, batch["sem_full"], batch["coord"])
        total = losses.get("rgb", 0.0)
        if "ssim" in losses:
            total = total + self.ssim_weight * losses["ssim"]
        if "sem" in losses:
            total = total + (1.0 if self.stage == "sir" else self.sem_weight) * losses["sem"]
        losses["loss"] = total
        return losses

    def semantic_loss(self, feats: Features, sem_full: Tensor, coord: Tensor) -> Tensor:
        """L1 between SIR and the unmasked image's semantic grid, where AIR reads SIR.

        AIR reads ``S`` at the input pixel centres around each query, with the input pixel's
        cell (:meth:`SAIR.query`); SIR is trained on exactly those reads for the first
        ``sem_queries / 4`` queries of each sample, against the unmasked image's grid
        interpolated there (bilinear, the LIIF weights), so its interpolation is supervised.
        """
        m = self.model
        with torch.no_grad():
            target_grid, _ = m.encode_semantic(sem_full, torch.ones_like(sem_full[:, :1]))
        n = max(1, min(coord.shape[1], -(-self.sem_queries // 4)))
        centres, cell = sir_read_points(coord[:, :n], feats.app.shape[-2:])
        pred = m.semantic_at(feats, centres, cell)
        return F.l1_loss(pred.float(), interpolate_grid(target_grid.float(), centres))


def sir_read_points(coord: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Where AIR reads SIR for queries ``coord (B, Q, 2)`` on an ``H x W`` input: the centres of
    the 4 input pixels around each query ``(B, 4Q, 2)`` and the input pixel's cell ``(1, 1, 2)``
    (the same arithmetic as :meth:`SAIR.query`)."""
    b, q = coord.shape[:2]
    centres = local_neighbours(coord, tuple(size)).centre.reshape(b, q * 4, 2)
    return centres, pixel_cell(int(size[0]), int(size[1]), coord)


def interpolate_grid(grid: Tensor, coord: Tensor) -> Tensor:
    """A ``(B, D, h, w)`` grid at ``coord (B, N, 2)``, bilinear with border replication (LIIF's
    area weights): ``(B, N, D)``."""
    nb = local_neighbours(coord, grid.shape[-2:])
    return ensemble(gather_latents(grid, nb.row, nb.col), nb.weight)


def patch_ssim(pred: Tensor, gt: Tensor, hole: Tensor, win: int = 7) -> Tensor:
    """Mean SSIM of square patches ``(B, P*P, 3)`` after compositing (known pixels are ground
    truth, as in the evaluation), with scikit-image's 7x7 uniform window and constants."""
    b, n, c = pred.shape
    p = int(round(math.sqrt(n)))
    out = (pred * hole + gt * (1 - hole)).transpose(1, 2).reshape(b, c, p, p)
    ref = gt.transpose(1, 2).reshape(b, c, p, p)
    mean = lambda x: F.avg_pool2d(x, win, stride=1)  # noqa: E731
    norm = win * win / (win * win - 1)  # sample covariance, as scikit-image
    mx, my = mean(out), mean(ref)
    vx = (mean(out * out) - mx * mx) * norm
    vy = (mean(ref * ref) - my * my) * norm
    vxy = (mean(out * ref) - mx * my) * norm
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean()


# ---- checkpoints -----------------------------------------------------------------------------
def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_pos": random.getstate()[2]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- validation ------------------------------------------------------------------------------
@torch.no_grad()
def validate(model: SAIR, loader, device: torch.device) -> dict[str, float]:
    """Composited PSNR / L1 on the validation crops at scale 1 (whole image queried)."""
    was = model.training
    model.eval()
    fast = FastSAIR(model)
    psnrs, l1s = [], []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        img, mask = batch["image"], batch["mask"]
        b, _, h, w = img.shape
        feats = model.encode(img, mask, batch.get("sem_image"), batch.get("sem_valid"))
        coord = torch.from_numpy(make_coord((h, w))).to(img).unsqueeze(0).expand(b, -1, -1)
        cell = torch.tensor([[[2.0 / h, 2.0 / w]]], device=device)
        pred = fast.query_dense(feats, coord, cell).clamp(0, 1)
        pred = pred.transpose(1, 2).reshape(b, 3, h, w)
        out = pred * mask + img * (1 - mask)
        mse = ((out - img) ** 2).flatten(1).mean(1).clamp_min(1e-10)
        psnrs += (10 * torch.log10(1 / mse)).tolist()
        l1s += (out - img).abs().flatten(1).mean(1).tolist()
    model.train(was)
    return {"val_psnr": float(np.mean(psnrs)), "val_l1": float(np.mean(l1s))} if psnrs else {}


# ---- the loop --------------------------------------------------------------------------------
class _Batches:
    """This process's batches of one epoch: a seeded permutation, sharded, from batch ``start``."""

    def __init__(self, dataset, batch: int, epoch: int, seed: int, rank: int, world: int,
                 start: int, workers: int):
        n = len(dataset)
        order = np.random.default_rng([seed, epoch, 11]).permutation(n)
        steps = n // batch if n >= batch else 1
        order = np.resize(order, steps * batch)  # repeats when the set is smaller than a batch
        local = batch // world
        self.batches = [order[s * batch + rank * local: s * batch + (rank + 1) * local].tolist()
                        for s in range(start, steps)]
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=self.batches, num_workers=workers,
            persistent_workers=False)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.loader)


def steps_per_epoch(n: int, batch: int) -> int:
    return n // batch if n >= batch else 1


def train(args: TrainArgs, resume: str | None = None, force: bool = False,
          given: set[str] | None = None) -> dict[str, Any]:
    """Run (or continue) training; returns a summary of the last step."""
    return run_training(args, resume, force, given)[0]


def run_training(args: TrainArgs, resume: str | None = None, force: bool = False,
                 given: set[str] | None = None) -> tuple[dict[str, Any], SAIR]:
    """:func:`train`, also returning this process's trained model.

    ``force`` lets a new run replace the run files of an earlier one in its folder; ``given``
    names the options the user set (for ``resume``: the others come from the run; None: all).
    """
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        return _run_training(args, resume, force, given)
    finally:  # the loop's stop-request handlers, whatever way it ended
        for s, h in handlers.items():
            if h is not None:
                signal.signal(s, h)


def _run_training(args: TrainArgs, resume: str | None, force: bool,
                  given: set[str] | None) -> tuple[dict[str, Any], SAIR]:
    from tqdm import tqdm

    state, run_dir = None, None
    if resume:
        state, args, run_dir = resume_run(args, resume, given, TrainArgs, force)
    if args.out is None:
        args.out = "runs/sair"
    args = resolve_recipe(args)
    if args.amp not in AMP_MODES:
        raise ValueError(f"unknown --amp {args.amp!r}; one of {', '.join(AMP_MODES)}")
    owns_group = not _distributed()
    rank, world, device = _dist_setup(args.device)
    if args.batch % world:
        raise ValueError(f"batch {args.batch} is not divisible by {world} processes")
    if args.stage not in STAGES:
        raise ValueError(f"unknown stage {args.stage!r}; one of {', '.join(STAGES)}")
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    out = Path(args.out)
    check_run_folder(out, run_dir, force)
    readable_images(list_images(args.data), "training")
    if world > 1:
        dist.barrier()  # every process checked the folder before the first one writes in it
    if rank == 0:
        reset_run_folder(out, continuing=state is not None and run_dir is not None
                         and out.absolute().resolve() == run_dir.absolute().resolve())

    model = build_model(args)
    note = check_semantic_setup(args, model)
    if note and rank == 0 and state is None:
        print(note, file=sys.stderr)
    if world > 1 and device.type == "cuda" and model.cfg.app.norm == "batch":
        # 8 GPUs x batch 16 leave 2 images per GPU: BatchNorm statistics over all of them.
        # (SyncBatchNorm needs GPUs; gloo runs on CPU keep per-process statistics.)
        model.app_encoder = nn.SyncBatchNorm.convert_sync_batchnorm(model.app_encoder)
    files = list_images(args.data)
    if args.val:
        train_files, val_files = files, list_images(args.val)
    else:
        train_files, val_files = split_files(files, args.val_count, args.seed)
    sem_target = semantic_loss_on(args, model)
    spec = SampleSpec(size=args.size, crop=args.crop, queries=args.queries,
                      scale_max=args.scale_max,
                      scale_prob=args.scale_prob, hole_fraction=args.hole_fraction,
                      color_jitter=args.color_jitter, sem_max_side=model.cfg.semantic.max_side,
                      semantic_target=sem_target,
                      patch=args.patch if args.ssim_weight > 0 else 0,
                      sr_prob=args.sr_prob, sr_holes=args.sr_holes)
    masks = MaskFolder(args.masks) if args.masks else None
    train_set = InpaintingDataset(train_files, spec, args.seed, args.repeat, masks)
    val_set = ValidationDataset(val_files, spec, args.seed) if val_files else None
    spe = steps_per_epoch(len(train_set), args.batch)

    params = [p for n, p in model.named_parameters()
              if not n.startswith("semantic.") or _train_clip(args, model)]
    opt = torch.optim.Adam(params, lr=args.lr, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=args.lr_step, gamma=args.lr_gamma)
    step, epoch, start = 0, 0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, epoch, start = state["step"], state["epoch"], state["batch_in_epoch"]
        _set_rng_state(state["rng"])
        if rank == 0 and (out / "state.pt").is_file():
            repair_model_file(out, state, lambda p: save_checkpoint(model, p, extra={
                "step": str(step), "epoch": str(epoch), "final": str(state.get("final", False)),
                "clip_pretrained": str(clip_pretrained(args, model.cfg)).lower()}))
    model.to(device).train()
    if args.channels_last:
        model.app_encoder.to(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16")
    pretrained = clip_pretrained(args, model.cfg)

    log_f = None
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        log_f = open(out / "log.jsonl", "a")

    def log(record: dict[str, Any]) -> None:
        if log_f:
            log_f.write(json.dumps(record) + "\n")
            log_f.flush()

    def checkpoint(final: bool = False) -> None:
        if rank != 0:
            return
        commit_checkpoint(out, {
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "step": step, "epoch": epoch,
            "batch_in_epoch": start, "rng": _rng_state(), "args": args.to_dict(), "final": final},
            checkpoint_writer(model, extra={"step": str(step), "epoch": str(epoch),
                                            "final": str(final),
                                            "clip_pretrained": str(pretrained).lower()}))

    if rank == 0:
        log({"event": "start", "step": step, "epoch": epoch, "world": world,
             "train_images": len(train_files), "val_images": len(val_files),
             "steps_per_epoch": spe, "args": args.to_dict(), "model": model.cfg.to_dict(),
             "semantic_loss": sem_target, "clip_pretrained": pretrained})

    stopper = StopRequest().__enter__()  # SIGINT/SIGTERM: stop after this step, checkpointed
    t0 = time.time()
    deadline = t0 + args.max_minutes * 60 if args.max_minutes else math.inf
    stop = args.max_steps is not None and step >= args.max_steps
    last: dict[str, Any] = {}
    skipped_total = 0
    while epoch < args.epochs and not stop:
        stage = stage_at(args, epoch)
        set_trainable(model, args, stage)
        step_mod: nn.Module = TrainStep(model, args.sem_weight if sem_target else 0.0, stage,
                                        args.ssim_weight, args.sem_queries)
        if world > 1:
            step_mod = nn.parallel.DistributedDataParallel(
                step_mod, device_ids=[device.index] if device.type == "cuda" else None)
        train_set.set_epoch(epoch)
        batches = _Batches(train_set, args.batch, epoch, args.seed, rank, world, start,
                           args.workers)
        bar = tqdm(total=spe, initial=start, desc=f"epoch {epoch} [{stage}]",
                   disable=rank != 0 or not args.progress, mininterval=2.0, dynamic_ncols=True)
        tick, seen = time.time(), 0
        for batch in batches:
            skipped_total += int(batch.pop("skipped").sum())
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            if args.channels_last:
                for k in ("image", "mask"):
                    batch[k] = batch[k].contiguous(memory_format=torch.channels_last)
            with autocast:
                losses = step_mod(batch)
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            opt.step()
            step += 1
            start += 1
            seen += batch["image"].shape[0] * world
            ips = seen / max(time.time() - tick, 1e-6)
            vals = {k: float(v.detach()) for k, v in losses.items()}
            bar.set_postfix(loss=f"{vals['loss']:.4f}", img_s=f"{ips:.1f}")
            bar.update(1)
            last = {"step": step, "epoch": epoch, "stage": stage, **vals,
                    "lr": opt.param_groups[0]["lr"], "img_s": ips, "skipped": skipped_total}
            if step % args.log_every == 0:
                log(last)
            if args.ckpt_every and step % args.ckpt_every == 0:
                checkpoint()
            stop = time.time() > deadline or (args.max_steps is not None
                                              and step >= args.max_steps) or stopper.requested
            if world > 1:  # every process stops at the same step
                flag = torch.tensor([float(stop)], device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                stop = bool(flag.item())
            if stop:
                break
        bar.close()
        if not stop:
            epoch += 1
            start = 0
            with warnings.catch_warnings():  # after a resume the fresh optimiser has not stepped
                warnings.simplefilter("ignore", UserWarning)
                sched.step()
            if rank == 0 and val_set is not None and args.val_every and \
                    epoch % args.val_every == 0:
                loader = torch.utils.data.DataLoader(val_set, batch_size=8)
                metrics = validate(model, loader, device)
                log({"event": "val", "step": step, "epoch": epoch, **metrics})
                last.update(metrics)
    checkpoint(final=not stopper.requested)
    if rank == 0:
        log({"event": "end", "step": step, "epoch": epoch, "minutes": (time.time() - t0) / 60,
             "skipped_images": skipped_total})
        log_f.close()
    if stopper.requested:
        raise Stopped(stopper.signal, step, out)
    last.update(step=step, epoch=epoch, skipped=skipped_total)
    if world > 1 and owns_group:
        dist.destroy_process_group()
    return last, model
