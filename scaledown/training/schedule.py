# Learning-rate schedules: linear warmup, then linear (OSCAR), cosine or constant.
from __future__ import annotations

import math
from typing import Callable


def lr_multiplier(kind: str, total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Multiplier of each group's base learning rate at optimizer step `step` (0-based)."""
    total_steps = max(1, total_steps)

    def at(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(max(progress, 0.0), 1.0)
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return max(0.0, 1.0 - progress)  # linear decay to 0 at the last step

    return at


def warmup_steps_for(total_steps: int, warmup_ratio: float) -> int:
    return int(math.ceil(total_steps * warmup_ratio))
