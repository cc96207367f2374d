"""The wire contract between ``sair-serve`` and its clients (names, and how errors travel)."""

from __future__ import annotations

import re

from ..errors import InputError, ModelError, SairError

MODEL_NAME = "sair_inpaint"
INPUT_IMAGE, INPUT_MASK, INPUT_SCALE = "image", "mask", "scale"
OUTPUT = "inpainted"

# Triton wraps a model's exception in its own text (PyTriton adds a traceback); the one-line
# message travels inside this tag so a client can cut it out exactly.
_TAG = re.compile(r"<sair-error exit=(\d)>(.*?)</sair-error>", re.S)


def wrap_error(err: SairError) -> str:
    """The text a server puts in an error response for ``err``."""
    return f"<sair-error exit={err.exit_code}>{err}</sair-error>"


def unwrap_error(text: str) -> SairError | None:
    """The error a server response carries (InputError for exit 2, ModelError for 3), else None."""
    found = _TAG.findall(text)
    if not found:
        return None
    code, message = found[-1]
    return ModelError(message) if code == "3" else InputError(message)
