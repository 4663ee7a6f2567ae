# `scaledown plot`: PNG files of a training run, a `scaledown eval` output or a latency report (scaledown/evaluation/plots.py draws them).
from __future__ import annotations

import os
from typing import Optional, Sequence

from scaledown.cli.args import FriendlyParser
from scaledown.destination import check_destination
from scaledown.errors import DataError
from scaledown.evaluation.plots import (plot_before_after, plot_latency, plot_systems, plot_training_curves,
                                        run_before_after)
from scaledown.evaluation.tb_logs import read_scalars
from scaledown.text_files import load_json


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise DataError(f"{path} does not exist.")
    return load_json(path, DataError)


def plot_main(argv: Optional[Sequence[str]] = None, prog: str = "scaledown plot") -> int:
    parser = FriendlyParser(prog=prog, description="Plot (PNG) training curves and the before/after accuracy of a "
                            "training run, the systems of a `scaledown eval` output, or a latency benchmark.")
    parser.add_argument("--run", help="a training run's --output_dir (TensorBoard logs in runs/, train_summary.json)")
    parser.add_argument("--eval", help="a `scaledown eval --output` folder (metrics.json)")
    parser.add_argument("--latency", help="latency.json of `scaledown bench latency`")
    parser.add_argument("--output", help="folder for the PNG files (default: next to the input)")
    parser.add_argument("--overwrite", action="store_true", help="replace PNG files of an earlier plot")
    args = parser.parse_args(argv)
    if not (args.run or args.eval or args.latency):
        parser.error("nothing to plot: give --run, --eval and/or --latency")
    targets = []
    if args.run:
        targets += [os.path.join(args.output or args.run, n) for n in ("training_curves.png", "accuracy_before_after.png")]
    if args.eval:
        targets.append(os.path.join(args.output or args.eval, "systems.png"))
    if args.latency:
        targets.append(os.path.join(args.output or os.path.dirname(os.path.abspath(args.latency)), "latency.png"))
    for target in targets:   # before anything is drawn
        check_destination(target, args.overwrite, "the plot")
    written = []
    if args.run:
        out = args.output or args.run
        curves = read_scalars(os.path.join(args.run, "runs"))   # every event file: a resumed run's parts too
        written.append(plot_training_curves(curves, os.path.join(out, "training_curves.png"), title=args.run))
        path = os.path.join(args.run, "train_summary.json")
        summary = run_before_after(_read_json(path) if os.path.isfile(path) else {}, curves)
        if summary.get("eval_before") and summary.get("eval_after"):
            written.append(plot_before_after(summary, os.path.join(out, "accuracy_before_after.png")))
        else:
            print(f"note: {args.run} has no held-out evaluation at step 0 and at the end, so there is no "
                  f"before/after accuracy plot (train with --eval_data, or the built-in synthetic task).")
    if args.eval:
        written.append(plot_systems(_read_json(os.path.join(args.eval, "metrics.json")),
                                    os.path.join(args.output or args.eval, "systems.png")))
    if args.latency:
        written.append(plot_latency(_read_json(args.latency), os.path.join(
            args.output or os.path.dirname(os.path.abspath(args.latency)), "latency.png")))
    for path in written:
        print(f"wrote {path}")
    return 0
