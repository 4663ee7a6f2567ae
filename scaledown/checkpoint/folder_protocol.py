# The checkpoint folder protocol: tag names, `latest`, trainer_state.json, atomic commit and retention.
"""Every backend (local, deepspeed, neuron, torch_native), the training loop and `scaledown convert` follow it:

    OUTPUT_DIR/checkpoints/step_0000100/   one checkpoint (tag_for(step)); its files are the backend's
    OUTPUT_DIR/checkpoints/step_0000100/trainer_state.json
                                           written last, after every rank finished: its presence makes the
                                           checkpoint complete (is_complete); a folder without it is invisible
    OUTPUT_DIR/checkpoints/latest          the newest complete tag, replaced atomically (mark_latest)
    OUTPUT_DIR/checkpoints/.step_N.tmp-*   a checkpoint being staged (staging_path / commit): renamed into
                                           place when all its files are written, removed by prune when left

Retention (prune, save_total_limit): the newest `keep` complete checkpoints stay; an incomplete one is never
counted, and the one just written is never removed. This module imports nothing of training/ (the loop and
the backends import it).
"""
from __future__ import annotations

import errno
import os
import re
import shutil
from typing import Any, Optional

from scaledown import atomic_files
from scaledown.errors import CheckpointError
from scaledown.text_files import load_json

STATE_FILE = "trainer_state.json"
LATEST_FILE = "latest"
CHECKPOINTS_DIR = "checkpoints"
_TAG = re.compile(r"^step_(\d+)$")


# ---- names ------------------------------------------------------------------------------------------------------
def tag_for(step: int) -> str:
    return f"step_{step:07d}"


def step_of_tag(name: str) -> Optional[int]:
    """The step a tag name stands for (step_0000100 -> 100); None for another name."""
    m = _TAG.match(os.path.basename(os.path.normpath(name)))
    return int(m.group(1)) if m else None


def checkpoints_root(output_dir: str) -> str:
    return os.path.join(output_dir, CHECKPOINTS_DIR)


# ---- the state file ---------------------------------------------------------------------------------------------
def state_path(path: str) -> str:
    return os.path.join(path, STATE_FILE)


def is_complete(path: str) -> bool:
    return os.path.isfile(state_path(path))


def write_state(path: str, state: dict[str, Any]) -> None:
    """Write trainer_state.json last: its presence marks the checkpoint complete."""
    atomic_files.write_json(state_path(path), state, indent=2, sort_keys=True, default=str)


def read_state(path: str) -> dict[str, Any]:
    """trainer_state.json of the checkpoint `path` as it is (CheckpointError for bad JSON, OSError when missing)."""
    return load_json(state_path(path), CheckpointError)


def state_if_any(path: str) -> Optional[dict[str, Any]]:
    """trainer_state.json of `path`, or None when the folder has none (a converted or engine-only folder);
    an unreadable one raises CheckpointError."""
    if not is_complete(path):
        return None
    try:
        return read_state(path)
    except OSError as exc:
        raise CheckpointError(f"{state_path(path)} could not be read ({exc}). The checkpoint is damaged; copy it "
                              f"again.") from None


def checked_state(path: str) -> dict[str, Any]:
    """trainer_state.json of a checkpoint being resumed; a missing or damaged one raises CheckpointError naming
    the previous complete checkpoint."""
    file = state_path(path)
    try:
        state = read_state(path)
    except FileNotFoundError:
        raise damaged(file, "is missing") from None
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise damaged(file, f"is not valid JSON ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise damaged(file, "does not hold a trainer state (no integer 'step')")
    return state


# ---- listing ----------------------------------------------------------------------------------------------------
def complete_checkpoints(root: str) -> list[tuple[int, str]]:
    """(step, path) of complete checkpoints, oldest first."""
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        step = step_of_tag(name)
        if step is not None and is_complete(os.path.join(root, name)):
            found.append((step, os.path.join(root, name)))
    return sorted(found)


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
    step = step_of_tag(path)
    for older_step, older in reversed(complete_checkpoints(os.path.dirname(os.path.normpath(path)))):
        if step is not None and older_step >= step:
            continue
        try:
            read_state(older)
        except (OSError, ValueError):
            continue
        return older
    return None


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
    if os.path.isdir(resume_from) and step_of_tag(resume_from) is not None:
        raise CheckpointError(f"{resume_from} is an incomplete checkpoint (no {STATE_FILE}: the run stopped while "
                              f"saving it). Resume from an older one or use --resume_from auto.")
    raise CheckpointError(f"--resume_from {resume_from}: no complete checkpoint there. Pass a checkpoint folder "
                          f"(OUTPUT_DIR/checkpoints/step_N), a run folder, or 'auto'.")


# ---- writing: atomic commit, `latest`, retention ----------------------------------------------------------------
def staging_path(final: str) -> str:
    """The fixed staging folder of the checkpoint `final` (`.step_N.tmp-staging` beside it): every rank of a
    run computes the same name, so all can write into it before one rank commits it."""
    parent, name = os.path.split(os.path.normpath(final))
    return os.path.join(parent, f".{name}{atomic_files.TMP_MARK}staging")


def new_staging(final: str) -> str:
    """A fresh, private staging folder for `final` (one writing process)."""
    return atomic_files.staging_directory(final)


def commit(staging: str, final: str) -> None:
    """Move a fully written staging folder into place as `final` (an older folder of that name is replaced)."""
    atomic_files.commit_directory(staging, final)


def clear_incomplete(path: str, ignore_errors: bool = False) -> None:
    """Remove `path` when it is a checkpoint folder without its state file (left by a run killed while saving,
    or by a save that failed): engines that write in place (DeepSpeed, NxD) save into it again."""
    if os.path.isdir(path) and not is_complete(path):
        shutil.rmtree(path, ignore_errors=ignore_errors)


def mark_latest(root: str, tag: str) -> None:
    atomic_files.write_text(os.path.join(root, LATEST_FILE), tag, encoding="ascii")


def read_latest(root: str) -> Optional[str]:
    """The tag a `latest` file in `root` names (DeepSpeed's engine reads the same file), or None."""
    file = os.path.join(root, LATEST_FILE)
    if not os.path.isfile(file):
        return None
    with open(file) as f:
        return f.read().strip()


def prune(root: str, keep: int, protect: Optional[str] = None) -> list[str]:
    """Delete the oldest complete checkpoints beyond `keep` (0 keeps all) and leftover temporary folders."""
    removed = []
    if os.path.isdir(root):
        for name in os.listdir(root):
            if atomic_files.TMP_MARK in name:
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


# ---- what to tell the user --------------------------------------------------------------------------------------
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
