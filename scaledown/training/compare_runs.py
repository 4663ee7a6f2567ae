# `scaledown compare-runs RUN_A RUN_B`: two runs' TensorBoard curves compared tag by tag within a tolerance.
"""NxD's GPU-vs-Trn1 habit (test/integration/common/compare_gpu_trn1_metrics.py): for every scalar tag both
runs logged, take the steps both have from --start_step on; a step agrees when |a - b| <= rtol * max(|a|, |b|)
+ atol; the tag passes when at least --threshold of its steps agree. Exit 0 when every compared tag passes,
1 otherwise. Throughput tags (perf/*) differ by hardware and are left out unless named with --tags.
"""
from __future__ import annotations

from typing import Optional, Sequence

from scaledown.errors import ConfigError
from scaledown.evaluation.tb_logs import run_scalars as read_scalars  # noqa: F401  (this module's API)


def compare(a: dict[str, dict[int, float]], b: dict[str, dict[int, float]], tags: Optional[Sequence[str]] = None,
            rtol: float = 0.05, atol: float = 0.0, start_step: int = 0, threshold: float = 0.95) -> list[dict]:
    """One result row per tag: steps compared, fraction agreeing, worst relative difference, passed."""
    if tags:
        missing = [t for t in tags if t not in a or t not in b]
        if missing:
            raise ConfigError(f"--tags {', '.join(missing)} not logged by both runs. Tags in both: "
                              f"{', '.join(sorted(set(a) & set(b)))}.")
        chosen = list(tags)
    else:
        chosen = sorted(t for t in set(a) & set(b) if not t.startswith("perf/"))
    rows = []
    for tag in chosen:
        steps = sorted(s for s in set(a[tag]) & set(b[tag]) if s >= start_step)
        agree, worst = 0, 0.0
        for step in steps:
            x, y = a[tag][step], b[tag][step]
            diff = abs(x - y)
            scale = max(abs(x), abs(y))
            worst = max(worst, diff / scale if scale else 0.0)
            agree += diff <= rtol * scale + atol
        fraction = agree / len(steps) if steps else 0.0
        rows.append({"tag": tag, "steps": len(steps), "agree": fraction, "worst_rel": worst,
                     "passed": bool(steps) and fraction >= threshold})
    return rows
