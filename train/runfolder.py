"""A run folder that never loses a trained run: what ``sair-train`` may write where, resuming
with the run's own options, one commit point for a checkpoint, cleanup after kills, and stopping
cleanly on SIGINT/SIGTERM.

A checkpoint is two files, ``state.pt`` (everything to continue) and ``model.safetensors`` (the
deployable model). Both are written to temp files first; the rename of ``state.pt`` is the
commit point and the model's rename follows at once, with SIGINT/SIGTERM held back between the
two. Only SIGKILL can land between them; then ``model.safetensors`` is older than ``state.pt``,
which :func:`repair_model_file` notices on the next start of that run and rewrites.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import torch

from sair_deploy.errors import InputError, ModelError
from sair_deploy.files import remove_stale_temps, signals_deferred, write_temp

STATE, MODEL, LOG = "state.pt", "model.safetensors", "log.jsonl"
RUN_FILES = (STATE, MODEL, LOG)
# Options about this invocation: a resumed run may take new values (and says which it applied).
CHANGEABLE = ("out", "max_minutes", "max_steps", "progress", "workers", "device", "epochs",
              "log_every", "ckpt_every", "val_every", "clip_cache")
FLAGS = {"data": "DATA", "out": "-o", "progress": "--no-progress",
         "train_clip": "--train-clip/--freeze-clip", "residual": "--residual/--no-residual"}


def flag(name: str) -> str:
    """The command-line spelling of a TrainArgs field, for messages."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training-state file; a truncated or corrupt file is a one-line :class:`ModelError`."""
    path = Path(path)
    if path.is_dir():
        path = path / STATE
    if not path.is_file():
        raise ModelError(f"no training state at {path}; pass a run folder or its state.pt")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        detail = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ModelError(f"training state {path} is truncated or corrupt ({detail}); "
                         f"resume from an intact copy or start a new run") from None


def _start_args(run_dir: Path) -> dict[str, Any] | None:
    """The options of a run that never reached its first checkpoint, from its log's first line."""
    try:
        first = (run_dir / LOG).read_text().splitlines()[0]
        record = json.loads(first)
    except (OSError, IndexError, ValueError):
        return None
    return record.get("args") if record.get("event") == "start" else None


def resume_run(args, resume: str | os.PathLike, given: set[str] | None, args_type: type,
               force: bool = False) -> tuple[dict[str, Any] | None, Any, Path]:
    """The state to continue from (``None``: a run killed before its first checkpoint, started
    again from step 0 with its own options), the run's options with the changeable ones the
    user gave applied, and the run folder.

    ``given`` names the options set on the command line (``None``: every field of ``args``).
    Any other option that differs from the run's is refused, naming each one.
    """
    resume = Path(resume)
    run_dir = resume if resume.is_dir() or resume.suffix != ".pt" else resume.parent
    if resume.is_dir() and not (resume / STATE).exists() and _start_args(resume) is not None:
        state, saved = None, dict(_start_args(resume))
    else:
        state = load_state(resume)
        saved = dict(state["args"])
    fields = [f.name for f in dataclasses.fields(args_type)]
    given = set(fields) if given is None else set(given)
    ours = args.to_dict()
    conflicts, applied = [], []
    for name in fields:
        if name not in given or name not in saved or name == "out" or ours[name] is None:
            continue
        if _same(ours[name], saved[name]):
            continue
        if name in CHANGEABLE:
            saved[name] = ours[name]
            applied.append(f"{flag(name)} {ours[name]}")
        else:
            conflicts.append(f"{flag(name)} ({ours[name]!r}; the run has {saved[name]!r})")
    if conflicts:
        raise InputError(f"--resume {run_dir}: these options differ from the run's: "
                         f"{', '.join(conflicts)}; drop them to continue it, or start a new run")
    target = Path(ours["out"]) if "out" in given and ours["out"] is not None else run_dir
    saved["out"] = str(target)
    check_run_folder(target, run_dir, force)
    if os.environ.get("RANK", "0") == "0":
        where = "" if _same_dir(target, run_dir) else f" into {target}"
        what = (f"at step {state['step']}" if state is not None else
                "from step 0 (it was stopped before its first checkpoint)")
        print(f"resuming {run_dir} {what}{where}"
              f"{'; applied ' + ', '.join(applied) if applied else ''}", file=sys.stderr)
    saved.setdefault("crop", "zoom")  # runs from before the recipes cropped at random zooms
    return state, args_type(**saved), run_dir


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return [str(x) for x in a] == [str(x) for x in b]
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and float(a) == float(b)
    return a == b


def _same_dir(a: Path, b: Path) -> bool:
    return a.absolute().resolve() == b.absolute().resolve()


def check_run_folder(out: Path, run_dir: Path | None, force: bool) -> None:
    """Refuse, before any work, to start a run in a folder that holds something (an earlier run)
    unless it is the run being resumed or ``force``; also a folder we cannot write in."""
    from sair_deploy.files import check_writable_dir

    if out.exists() and not out.is_dir():
        raise InputError(f"run folder {out} is a file")
    this_run = run_dir is not None and _same_dir(out, run_dir)
    if out.is_dir() and any(out.iterdir()) and not this_run and not force:
        hint = f"--resume {out} to continue it, " if (out / STATE).exists() else ""
        raise InputError(f"run folder {out} is not empty (an earlier run?); pass {hint}--force to "
                         f"start over in it, or -o NEW_FOLDER")
    parent = out.absolute()
    while not parent.exists():
        parent = parent.parent
    check_writable_dir(parent, "run folder" if parent == out.absolute() else "folder")


def reset_run_folder(out: Path, continuing: bool) -> None:
    """Make ``out`` ready (rank 0 only): remove temp files a kill left, and unless the run in it
    continues, the earlier run's own files (so two runs never mix in one log)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        remove_stale_temps(out / name)
        if not continuing and (out / name).exists():
            (out / name).unlink()


def commit_checkpoint(out: Path, state: dict[str, Any], write_model: Callable[[str], None]) -> None:
    """Write ``state.pt`` and ``model.safetensors`` as one checkpoint (see the module doc)."""
    tmp_model = write_temp(out / MODEL, write_model)
    try:
        tmp_state = write_temp(out / STATE, lambda tmp: torch.save(state, tmp))
    except BaseException:
        os.unlink(tmp_model)
        raise
    with signals_deferred():
        os.replace(tmp_state, out / STATE)  # the commit point
        os.replace(tmp_model, out / MODEL)


def repair_model_file(out: Path, state: dict[str, Any], save_model: Callable[[Path], None]) -> bool:
    """Rewrite ``model.safetensors`` from the committed state when a kill left it older (or
    missing); returns whether it did."""
    from sair_deploy.model.checkpoint import read_metadata

    try:
        step = read_metadata(out / MODEL).get("step")
    except ModelError:
        step = None
    if step == str(state["step"]):
        return False
    save_model(out / MODEL)
    return True


def readable_images(files: list[Path], what: str) -> list[Path]:
    """Name the images that cannot be opened (their headers are read: cheap); refuse when none
    can. Returns the unreadable ones (the data loader skips and counts them)."""
    from PIL import Image

    bad = []
    for f in files:
        try:
            with Image.open(f):
                pass
        except Exception as exc:  # any reason a file is not an image we can read
            bad.append((f, str(exc).splitlines()[0][:60] if str(exc) else type(exc).__name__))
    if files and len(bad) == len(files):
        raise InputError(f"none of the {len(files)} {what} images can be read (e.g. {bad[0][0]}: "
                         f"{bad[0][1]})")
    if bad and os.environ.get("RANK", "0") == "0":
        names = ", ".join(str(f) for f, _ in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        print(f"warning: {len(bad)} of {len(files)} {what} images cannot be read and are skipped: "
              f"{names}", file=sys.stderr)
    return [f for f, _ in bad]


class StopRequest:
    """SIGINT/SIGTERM ask the training loop to stop after the current step (it then writes a
    checkpoint); a second signal stops at once. Installed only in the main thread."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        if self.signal is not None:
            raise KeyboardInterrupt()
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)

    @property
    def requested(self) -> bool:
        return self.signal is not None


class Stopped(KeyboardInterrupt):
    """Training stopped on a signal after writing a checkpoint at ``step``."""

    def __init__(self, signum: int, step: int, out: Path):
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step} (checkpoint "
                         f"written); continue with --resume {out}")
        self.signum, self.step, self.out = signum, step, out

