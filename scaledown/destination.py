# Output folders and files are never replaced silently: a command that would overwrite one needs --overwrite.
"""Every command that writes a folder or file checks its destination first (before any heavy work):

* `scaledown convert`, `eval`, `bench`, `plot`, `prepare-data` take `--overwrite` (OVERWRITE_FLAG);
* training takes `--overwrite_output_dir` (Hugging Face's name, OVERWRITE_RUN_FLAG) or `--resume_from`.
"""
from __future__ import annotations

import os
from typing import Iterable, Optional

from scaledown.errors import ConfigError

OVERWRITE_FLAG = "--overwrite"
OVERWRITE_RUN_FLAG = "--overwrite_output_dir"


def is_nonempty(path: str) -> bool:
    """A file, or a folder with anything in it."""
    if os.path.isdir(path):
        return bool(os.listdir(path))
    return os.path.lexists(path)


def check_destination(path: str, overwrite: bool, what: str = "the destination",
                      flag: str = OVERWRITE_FLAG, contents: Optional[Iterable[str]] = None) -> None:
    """Raise ConfigError when `path` would be replaced and `overwrite` is off.

    `contents`: names inside the folder `path` that this command writes; only those count as "would be replaced"
    (a folder that also keeps reusable things, such as an index). None: any non-empty folder or existing file.
    """
    if overwrite:
        return
    if contents is None:
        clash = [path] if is_nonempty(path) else []
    else:
        clash = [os.path.join(path, name) for name in contents if is_nonempty(os.path.join(path, name))]
    if clash:
        shown = ", ".join(clash[:3]) + (f" and {len(clash) - 3} more" if len(clash) > 3 else "")
        holds = "already exists" if clash == [path] else f"already holds {shown}"
        raise ConfigError(f"{what} {path} {holds}. Nothing was written: pass {flag} to replace it, "
                          f"or choose another destination.")
