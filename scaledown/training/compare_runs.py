# `scaledown compare-runs RUN_A RUN_B`: two runs' TensorBoard curves compared tag by tag within a tolerance.
"""NxD's GPU-vs-Trn1 habit (test/integration/common/compare_gpu_trn1_metrics.py): for every scalar tag both
runs logged, take the steps both have from --start_step on; a step agrees when |a - b| <= rtol * max(|a|, |b|)
+ atol; the tag passes when at least --threshold of its steps agree. Exit 0 when every compared tag passes,
1 otherwise. Throughput tags (perf/*) differ by hardware and are left out unless named with --tags.
"""
from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

from scaledown.errors import ConfigError

DESCRIPTION = ("Compare two runs' TensorBoard scalars tag by tag (e.g. a Trn1 run against a GPU run started from the "
               "same converted weights). RUN is an --output_dir (its runs/ folder is read) or a folder of event files.")


def read_scalars(run: str) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} from every event file under RUN/runs (or RUN); a later write of a step wins."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    root = os.path.join(run, "runs") if os.path.isdir(os.path.join(run, "runs")) else run
    folders = sorted({d for d, _, files in os.walk(root) if any(".tfevents." in f for f in files)})
    if not folders:
        raise ConfigError(f"{run} holds no TensorBoard event files (looked in {root}). Pass a run's --output_dir.")
    scalars: dict[str, dict[int, float]] = {}
    for folder in folders:
        events = EventAccumulator(folder, size_guidance={"scalars": 0})
        events.Reload()
        for tag in events.Tags()["scalars"]:
            for event in events.Scalars(tag):
                scalars.setdefault(tag, {})[event.step] = event.value
    return scalars


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


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, allow_abbrev=False,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run_a", metavar="RUN_A")
    p.add_argument("run_b", metavar="RUN_B")
    p.add_argument("--rtol", type=float, default=0.05, help="relative tolerance per step (NxD's default)")
    p.add_argument("--atol", type=float, default=0.0, help="absolute tolerance added to rtol's")
    p.add_argument("--start_step", "--start-step", type=int, default=0,
                   help="first step compared (skip warm-up noise; NxD compares from step 450 of long runs)")
    p.add_argument("--threshold", type=float, default=0.95, help="fraction of steps that must agree per tag")
    p.add_argument("--tags", nargs="+", help="tags to compare (default: every train/ and eval/ tag both logged)")
    return p


def compare_main(argv: Optional[Sequence[str]] = None, prog: str = "scaledown compare-runs") -> int:
    args = build_parser(prog).parse_args(argv)
    rows = compare(read_scalars(args.run_a), read_scalars(args.run_b), args.tags, args.rtol, args.atol,
                   args.start_step, args.threshold)
    if not rows:
        raise ConfigError(f"{args.run_a} and {args.run_b} share no train/ or eval/ tag to compare.")
    print(f"{'tag':<28} {'steps':>5} {'agree':>7} {'worst rel diff':>14}  result")
    for row in rows:
        print(f"{row['tag']:<28} {row['steps']:>5} {row['agree']:>7.1%} {row['worst_rel']:>14.3g}  "
              f"{'ok' if row['passed'] else 'DIFFERENT'}")
    failed = [r["tag"] for r in rows if not r["passed"]]
    print(f"{len(rows) - len(failed)} of {len(rows)} tags agree within rtol {args.rtol} on >= {args.threshold:.0%} "
          f"of steps from step {args.start_step}" + (f"; differing: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0
