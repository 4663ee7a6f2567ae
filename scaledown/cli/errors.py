# Entry-point wrapper: user mistakes print one paragraph and exit non-zero, without a traceback.
from __future__ import annotations

import sys
from typing import Callable

from scaledown.errors import ScaleDownError


def run_cli(fn: Callable[[], int]) -> int:
    try:
        return fn() or 0
    except ScaleDownError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
