# Whether to draw tqdm progress bars: asked for, and stderr is a terminal (a log file gets no carriage-return frames).
from __future__ import annotations

import os
import sys

ENV_OFF = "SCALEDOWN_NO_PROGRESS"   # any non-empty value turns bars off everywhere (as --no_progress does)


def show_progress(requested: bool = True) -> bool:
    """True when bars were asked for, stderr is a TTY and SCALEDOWN_NO_PROGRESS is unset. Under SLURM, nohup or
    `> run.log 2>&1`, stderr is not a TTY: the periodic console lines remain the record of progress."""
    if not requested or os.environ.get(ENV_OFF):
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())
