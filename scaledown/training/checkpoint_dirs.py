# Checkpoint folders under OUTPUT_DIR/checkpoints: naming, the `latest` pointer, retention, resume lookup.
"""A checkpoint `step_0000100/` is complete once its `trainer_state.json` exists: every backend writes
that file last, after all ranks finished writing. `latest` names the newest complete checkpoint and is
replaced atomically, so it never points at a half-written one.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any, Optional

from scaledown.errors import CheckpointError

STATE_FILE = "trainer_state.json"
LATEST_FILE = "latest"
_TAG = re.compile(r"^step_(\d+)$")


def tag_for(step: int) -> str:
    return f"step_{step:07d}"


def checkpoints_root(output_dir: str) -> str:
    return os.path.join(output_dir, "checkpoints")


def is_complete(path: str) -> bool:
    return os.path.isfile(os.path.join(path, STATE_FILE))


def complete_checkpoints(root: str) -> list[tuple[int, str]]:
    """(step, path) of complete checkpoints, oldest first."""
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        m = _TAG.match(name)
        if m and is_complete(os.path.join(root, name)):
            found.append((int(m.group(1)), os.path.join(root, name)))
    return sorted(found)


def write_state(path: str, state: dict[str, Any]) -> None:
    """Write trainer_state.json last: its presence marks the checkpoint complete."""
    tmp = os.path.join(path, STATE_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(state, f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, os.path.join(path, STATE_FILE))


def read_state(path: str) -> dict[str, Any]:
    from scaledown.errors import CheckpointError
    from scaledown.text_files import load_json
    return load_json(os.path.join(path, STATE_FILE), CheckpointError)


def mark_latest(root: str, tag: str) -> None:
    tmp = os.path.join(root, LATEST_FILE + ".tmp")
    with open(tmp, "w") as f:
        f.write(tag)
    os.replace(tmp, os.path.join(root, LATEST_FILE))


def prune(root: str, keep: int, protect: Optional[str] = None) -> list[str]:
    """Delete the oldest complete checkpoints beyond `keep` (0 keeps all) and leftover temporary folders."""
    removed = []
    if os.path.isdir(root):
        for name in os.listdir(root):
            if ".tmp-" in name:
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    if keep <= 0:
        return removed
    done = complete_checkpoints(root)
    for _, path in done[:-keep]:
        if protect and os.path.abspath(path) == os.path.abspath(protect):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def resolve_resume(resume_from: Optional[str], output_dir: str) -> Optional[str]:
    """'auto' -> newest complete checkpoint of this run (None if there is none); PATH -> that checkpoint.

    PATH may be a checkpoint folder or a run folder (its newest complete checkpoint is used).
    """
    if not resume_from:
        return None
    if resume_from == "auto":
        done = complete_checkpoints(checkpoints_root(output_dir))
        return done[-1][1] if done else None
    if is_complete(resume_from):
        return resume_from
    for root in (resume_from, checkpoints_root(resume_from)):
        done = complete_checkpoints(root)
        if done:
            return done[-1][1]
    if os.path.isdir(resume_from) and _TAG.match(os.path.basename(os.path.normpath(resume_from))):
        raise CheckpointError(f"{resume_from} is an incomplete checkpoint (no {STATE_FILE}: the run stopped while "
                              f"saving it). Resume from an older one or use --resume_from auto.")
    raise CheckpointError(f"--resume_from {resume_from}: no complete checkpoint there. Pass a checkpoint folder "
                          f"(OUTPUT_DIR/checkpoints/step_N), a run folder, or 'auto'.")
