"""Writing files so that nothing the user had is lost: temp file in the same folder, then rename.

Temp files are named ``.NAME.<random>.tmp<SUFFIX>`` beside their target, so a process killed
with SIGKILL mid-write leaves only such a file, which :func:`remove_stale_temps` recognises and
removes on the next start. SIGTERM is turned into an exception by :func:`terminate_as_interrupt`,
so the ``finally`` blocks that remove temp files run on it too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from .errors import InputError


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that cleanup code written for one handles both."""


def _raise_terminated(signum, frame) -> None:  # noqa: ARG001 (signal handler signature)
    raise Terminated()


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """For the duration, make SIGTERM raise :class:`Terminated` (a KeyboardInterrupt).

    Without this, SIGTERM ends the process at once and a file being written stays behind as a
    temp file. Only in the main thread (signal handlers cannot be set elsewhere); the previous
    handler comes back on exit (the CLIs also run in-process, under tests).
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Block SIGINT and SIGTERM for the duration (they are delivered on exit), so a sequence of
    renames that must happen together is not cut in the middle by either."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def make_readable(path: str | os.PathLike) -> None:
    """Give a temp file (``mkstemp`` creates them 0600) the permissions a new file would have."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def temp_prefix(path: Path) -> str:
    return f".{path.name}."


def write_temp(path: str | os.PathLike, write: Callable[[str], None]) -> str:
    """Call ``write(tmp_path)`` on a fresh temp file beside ``path``; returns the temp file,
    synced and readable, ready for ``os.replace(tmp, path)``. Removes it if writing fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        make_readable(tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return tmp


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, then rename the temp file onto ``path``.

    A crash or kill at any moment leaves either the old file or the new one under ``path``,
    never a half-written one.
    """
    tmp = write_temp(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def stale_temps(path: str | os.PathLike) -> list[Path]:
    """Temp files that :func:`write_temp` left beside ``path`` (a kill mid-write)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    prefix, suffix = temp_prefix(path), ".tmp" + path.suffix
    return sorted(p for p in path.parent.iterdir()
                  if p.name.startswith(prefix) and p.name.endswith(suffix) and p.is_file())


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove what :func:`stale_temps` finds; returns the removed files."""
    removed = []
    for p in stale_temps(path):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed


def check_writable_file(path: str | os.PathLike, force: bool, what: str = "output") -> None:
    """Refuse, before any work, an output file that cannot be written: an existing file without
    ``force``, an existing folder, a missing parent folder or one we cannot create files in.

    The last is probed by creating (and removing) a temp file, which also catches places like
    ``/proc`` where permission bits say yes but writes fail, and read-only mounts.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder; give a file name")
    if path.exists() and not force:
        raise InputError(f"{path} already exists; pass --force to overwrite it")
    check_writable_dir(path.parent, what=f"{what} folder")


def check_writable_dir(folder: str | os.PathLike, what: str = "output folder") -> None:
    """Refuse a folder that does not exist, is not a folder, or cannot take new files."""
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"{what} {folder} does not exist")
    if not folder.is_dir():
        raise InputError(f"{what} {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".sair-write-check.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"cannot write into {what} {folder} ({exc.strerror or type(exc).__name__})") from None
