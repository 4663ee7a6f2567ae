# Small file helpers of the data pipeline: atomic JSON writes, input-file identity, waiting on shared files.
from __future__ import annotations

import os
import time
from typing import Any, Callable, Optional

from scaledown.atomic_files import write_json
from scaledown.text_files import load_json


def file_identity(path: str) -> dict[str, Any]:
    """What identifies an input file across runs: absolute path, size and modification time."""
    stat = os.stat(path)
    return {"path": os.path.abspath(path), "size": stat.st_size, "mtime": int(stat.st_mtime)}


def write_json_atomic(path: str, value: Any) -> None:
    """Readers see the old file or the new one, never half of it (the data pipeline's JSON style)."""
    write_json(path, value, indent=1, sort_keys=True)


def read_json(path: str) -> Optional[Any]:
    """The JSON in `path`, or None when it does not exist."""
    if not os.path.isfile(path):
        return None
    return load_json(path)


def wait_until(count_done: Callable[[], int], total: int, what: str, poll_seconds: float = 1.0) -> None:
    """Poll shared files until `count_done()` reaches `total` (workers may be on other machines)."""
    announced = False
    while True:
        try:
            done = count_done()
        except (OSError, ValueError):  # a file being replaced right now: look again
            done = -1
        if done >= total:
            return
        if not announced:
            print(f"waiting for {what} ({max(done, 0)}/{total} ready)", flush=True)
            announced = True
        time.sleep(poll_seconds)
