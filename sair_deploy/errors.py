"""Errors a user can act on. The CLIs print them as one line and exit non-zero, no traceback."""


class SairError(Exception):
    """Base class: a problem with what the user gave us, with a message that says what to do."""

    exit_code = 2


class InputError(SairError):
    """A bad image, mask, option or path."""


class ModelError(SairError):
    """A missing, corrupt or incompatible checkpoint, export or engine."""

    exit_code = 3
