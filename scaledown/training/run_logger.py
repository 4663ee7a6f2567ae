# Run logging: TensorBoard scalars (OUTPUT_DIR/runs), a progress bar and console lines, on one rank only.
from __future__ import annotations

import os
from typing import Optional

from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from scaledown.progress import show_progress
from scaledown.training import tags


class RunLogger:
    """Writes scalars and the progress bar when `enabled` (the logging rank); a no-op elsewhere."""

    def __init__(self, output_dir: str, enabled: bool, total_steps: int, initial_step: int = 0,
                 run_name: Optional[str] = None, progress: bool = True):
        self.enabled = enabled
        self.writer = None
        self.bar = None
        if not enabled:
            return
        self.log_dir = os.path.join(output_dir, "runs", run_name) if run_name else os.path.join(output_dir, "runs")
        self.writer = SummaryWriter(log_dir=self.log_dir)
        if show_progress(progress):   # off with --no_progress or when stderr is not a terminal (log files)
            self.bar = tqdm(total=total_steps, initial=initial_step, desc="train", unit="step", dynamic_ncols=True)

    def scalars(self, values: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        for tag, value in values.items():
            if value is not None:
                self.writer.add_scalar(tag, float(value), step)

    def step(self, step: int, loss: Optional[float] = None, extra: str = "") -> None:
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            if loss is not None:
                self.bar.set_postfix_str(f"loss {loss:.4f}{extra}", refresh=False)

    def line(self, step: int, values: dict[str, float]) -> None:
        """nanoGPT-style one-line summary: loss, lr, tokens/s and MFU where known."""
        if not self.enabled:
            return
        parts = [f"step {step}"]
        for tag, label, fmt in ((tags.LOSS, "loss", ".4f"), (tags.GRAD_NORM, "grad", ".3f"),
                                (tags.TOKENS_PER_SEC, "tok/s", ".0f"), (tags.MFU, "mfu", ".2%")):
            if values.get(tag) is not None:
                parts.append(f"{label} {values[tag]:{fmt}}")
        self.write(" | ".join(parts))

    def write(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
