# User-facing errors: raised for bad input, printed as one paragraph by the CLI (no traceback).
from __future__ import annotations


class ScaleDownError(Exception):
    """A mistake the user can fix (bad flag, bad file, bad config value).

    The message must say what is wrong and how to fix it. Entry points catch this
    and print it without a traceback; library users get a normal exception.
    """


class ConfigError(ScaleDownError, ValueError):
    """An inconsistent or invalid ScaleDownConfig value."""


class DataError(ScaleDownError, ValueError):
    """A malformed training/evaluation file or row."""


class CheckpointError(ScaleDownError, ValueError):
    """A checkpoint directory that is missing, incomplete or of another model."""
