# User-facing errors: raised for bad input, printed as one paragraph by the CLI (no traceback).
from __future__ import annotations

import importlib


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


def require(module: str, extra: str, purpose: str):
    """`importlib.import_module(module)`, or a ConfigError naming the package and the setup.py extra that installs
    it (optional dependencies: matplotlib for plots, pyarrow for parquet files, ...)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise ConfigError(f"{purpose} needs the '{package}' package, which this installation lacks. Install it with "
                          f"`pip install -e '.[{extra}]'` (ScaleDown's '{extra}' extra) or `pip install {package}`."
                          ) from None
