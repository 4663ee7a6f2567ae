# Checkpoint folders under OUTPUT_DIR/checkpoints: naming, the `latest` pointer, retention, resume lookup.
"""A checkpoint `step_0000100/` is complete once its `trainer_state.json` exists: every backend writes
that file last, after all ranks finished writing. `latest` names the newest complete checkpoint and is
replaced atomically, so it never points at a half-written one.
"""
from __future__ import annotations

import errno
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


def checkpoint_of(file: str) -> str:
    """The checkpoint folder (step_N) a file lies in; the file's folder when it is in none."""
    folder = os.path.dirname(os.path.abspath(file))
    probe = folder
    while probe and probe != os.path.dirname(probe):
        if _TAG.match(os.path.basename(probe)):
            return probe
        probe = os.path.dirname(probe)
    return folder


def previous_complete(path: str) -> Optional[str]:
    """The newest complete checkpoint older than `path` in the same folder, with a readable trainer_state.json."""
    m = _TAG.match(os.path.basename(os.path.normpath(path)))
    step = int(m.group(1)) if m else None
    for older_step, older in reversed(complete_checkpoints(os.path.dirname(os.path.normpath(path)))):
        if step is not None and older_step >= step:
            continue
        try:
            read_state(older)
        except (OSError, ValueError):
            continue
        return older
    return None


def damaged(file: str, problem: str) -> CheckpointError:
    """One paragraph naming a damaged or missing checkpoint file and what to do (the previous complete checkpoint)."""
    folder = checkpoint_of(file)
    previous = previous_complete(folder)
    if previous:
        advice = (f"The previous complete checkpoint is {previous}: move the damaged one aside (mv {folder} "
                  f"{folder}.damaged) and rerun with --resume_from auto, which then continues from {previous}.")
    else:
        advice = ("No older complete checkpoint of this run is left: restore the file from a copy, or start the run "
                  "over with --overwrite_output_dir.")
    return CheckpointError(f"{file} {problem}: the checkpoint {folder} is damaged and cannot be resumed (nothing was "
                           f"changed or deleted). {advice}")


def is_disk_full(error: Optional[BaseException]) -> bool:
    """Whether a write failed for lack of space (ENOSPC / EDQUOT anywhere in the exception chain or its text)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(error) or "Disk quota exceeded" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _torch_write_failed(error: Optional[BaseException]) -> bool:
    """torch's archive writer reports a failed write only as 'unexpected pos' / 'file write failed'."""
    text = str(error or "")
    return "unexpected pos" in text or "file write failed" in text


def _free_bytes(path: str) -> float:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return float("inf")


def save_failed(root: str, tag: str, error: Optional[BaseException]) -> CheckpointError:
    """One paragraph for a checkpoint that could not be written: why (the disk is full?) and what is still there."""
    path = os.path.join(root, tag)
    if error is None:
        why = "another rank could not write its part (its message says why)"
    elif is_disk_full(error) or (_torch_write_failed(error) and _free_bytes(root) < 64 * 2**20):
        try:
            free = f" ({shutil.disk_usage(root).free / 2**20:.1f} MiB free there now)"
        except OSError:
            free = ""
        why = f"the disk is full{free}"
    else:
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        why = f"{type(error).__name__}: {first}"
    done = complete_checkpoints(root)
    kept = (f"The newest complete checkpoint is {done[-1][1]}: make room (or fix the cause) and rerun with "
            f"--resume_from auto." if done else "No checkpoint of this run is complete yet.")
    return CheckpointError(f"saving the checkpoint {path} failed: {why}. The incomplete checkpoint was removed and "
                           f"no complete checkpoint was touched. {kept}")


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
