# Read scalar curves back from TensorBoard event files (OUTPUT_DIR/runs): the one reader behind plots,
# compare-runs, the benchmarks and the tests.
from __future__ import annotations

import os

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from scaledown.errors import DataError


def event_dirs(log_dir: str) -> list[str]:
    """Every folder under `log_dir` (itself included) that holds TensorBoard event files."""
    found = []
    for root, _, files in os.walk(log_dir):
        if any(f.startswith("events.out.tfevents") for f in files):
            found.append(root)
    return sorted(found)


def read_scalars(log_dir: str) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} over all event files under `log_dir`; a later write of a step wins
    (a resumed run rewrites the steps after its checkpoint)."""
    if not os.path.isdir(log_dir):
        raise DataError(f"{log_dir} does not exist; pass a training run's --output_dir (its TensorBoard logs are "
                        f"in OUTPUT_DIR/runs).")
    dirs = event_dirs(log_dir)
    if not dirs:
        raise DataError(f"no TensorBoard event files under {log_dir}; was the run started with this --output_dir?")
    curves: dict[str, dict[int, float]] = {}
    for directory in dirs:
        acc = EventAccumulator(directory, size_guidance={"scalars": 0})  # 0: keep every point
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            points = curves.setdefault(tag, {})
            for event in acc.Scalars(tag):
                points[int(event.step)] = float(event.value)
    return {tag: sorted(points.items()) for tag, points in curves.items()}


def run_scalars(run: str) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of a training run: every event file under RUN/runs (or under RUN itself when it has no
    runs/ folder). Raises DataError when there are none."""
    root = os.path.join(run, "runs") if os.path.isdir(os.path.join(run, "runs")) else run
    return {tag: dict(points) for tag, points in read_scalars(root).items()}
