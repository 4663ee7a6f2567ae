# Small file helpers of the data pipeline: atomic JSON writes, input-file identity, waiting on shared files.
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Optional


def file_identity(path: str) -> dict[str, Any]:
    """What identifies an input file across runs: absolute path, size and modification time."""
    stat = os.stat(path)
    return {"path": os.path.abspath(path), "size": stat.st_size, "mtime": int(stat.st_mtime)}


def write_json_atomic(path: str, value: Any) -> None:
    """Readers see the old file or the new one, never half of it (temp file, fsync, rename)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: str) -> Optional[Any]:
    """The JSON in `path`, or None when it does not exist."""
    if not os.path.isfile(path):
        return None
    from scaledown.text_files import load_json
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
