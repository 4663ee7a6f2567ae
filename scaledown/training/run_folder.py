# A run folder (--output_dir): whether it already holds a run, and clearing it when the user asks to start over.
from __future__ import annotations

import os
import shutil

from scaledown.checkpoint import folder_protocol as ckpt
from scaledown.destination import OVERWRITE_RUN_FLAG
from scaledown.errors import ConfigError

SUMMARY_FILE = "train_summary.json"
# what a run writes into its folder; --overwrite_output_dir removes these (other files of the user stay)
RUN_ENTRIES = ("final", "checkpoints", "runs", SUMMARY_FILE, ckpt.STATE_FILE)


def existing_run(output_dir: str) -> list[str]:
    """What in `output_dir` belongs to a run: final/, complete checkpoints, trainer_state / train_summary files."""
    found = []
    if os.path.isdir(os.path.join(output_dir, "final")):
        found.append(os.path.join(output_dir, "final"))
    found += [path for _, path in ckpt.complete_checkpoints(ckpt.checkpoints_root(output_dir))]
    for name in (ckpt.STATE_FILE, SUMMARY_FILE):
        if os.path.isfile(os.path.join(output_dir, name)):
            found.append(os.path.join(output_dir, name))
    return found


def check_new_run(output_dir: str, overwrite: bool) -> None:
    """A new run may not start where another run is, unless the user passed --overwrite_output_dir."""
    if overwrite:
        return
    found = existing_run(output_dir)
    if found:
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise ConfigError(
            f"--output_dir {output_dir} already holds a run ({shown}). Nothing was changed. Continue it with "
            f"--resume_from auto (its recorded settings and data are used), start over in it with "
            f"{OVERWRITE_RUN_FLAG} (its checkpoints and final/ are deleted), or choose another --output_dir.")


def clear_run(output_dir: str) -> list[str]:
    """Delete what a previous run wrote into `output_dir` (--overwrite_output_dir); returns the removed paths."""
    removed = []
    for name in RUN_ENTRIES:
        path = os.path.join(output_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
            removed.append(path)
        elif os.path.lexists(path):
            os.remove(path)
            removed.append(path)
    return removed
