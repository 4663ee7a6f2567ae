# `scaledown compare-runs RUN_A RUN_B`: the front-end of scaledown/training/compare_runs.py.
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from scaledown.cli.args import FriendlyParser
from scaledown.errors import ConfigError
from scaledown.training.compare_runs import compare, read_scalars

DESCRIPTION = ("Compare two runs' TensorBoard scalars tag by tag (e.g. a Trn1 run against a GPU run started from the "
               "same converted weights). RUN is an --output_dir (its runs/ folder is read) or a folder of event files.")


def build_parser(prog: str) -> FriendlyParser:
    p = FriendlyParser(prog=prog, description=DESCRIPTION, allow_abbrev=False,
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
