# PNG plots: training curves (TensorBoard logs), accuracy before/after training, systems side by side, latency.
from __future__ import annotations

import os
from typing import Optional, Sequence

from scaledown.atomic_files import atomic_path
from scaledown.errors import DataError
from scaledown.training import tags

# Panels of the training-curve figure: (title, tags drawn in it)
CURVE_PANELS = (
    ("loss", (tags.LOSS, tags.CE_LOSS, tags.RERANK_LOSS, tags.EVAL_LOSS)),
    ("held-out accuracy", (tags.EVAL_ACCURACY, tags.EVAL_EM)),
    ("learning rate", None),   # every train/lr_* tag
    ("throughput (tokens/s)", (tags.TOKENS_PER_SEC,)),
    ("gradient norm", (tags.GRAD_NORM,)),
)


def _pyplot():
    from scaledown.errors import require
    matplotlib = require("matplotlib", "eval", "Plotting")
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:   # matplotlib picks the format from the extension
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    return path


def plot_training_curves(curves: dict[str, list[tuple[int, float]]], path: str, title: str = "") -> str:
    plt = _pyplot()
    panels = []
    for name, panel_tags in CURVE_PANELS:
        chosen = [t for t in curves if t.startswith(tags.LR_PREFIX)] if panel_tags is None else \
            [t for t in panel_tags if t in curves]
        if chosen:
            panels.append((name, chosen))
    if not panels:
        raise DataError(f"the logs hold none of the training tags ({', '.join(t for _, ts in CURVE_PANELS if ts for t in ts)}).")
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.6 * len(panels)), sharex=True, squeeze=False)
    for ax, (name, chosen) in zip(axes[:, 0], panels):
        for tag in chosen:
            steps, values = zip(*curves[tag])
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=tag)
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if tags.PHASE in curves:  # where compression training starts after the generator warm-up
        switch = next((s for s, v in curves[tags.PHASE] if v >= 1), None)
        for ax in axes[:, 0]:
            if switch:
                ax.axvline(switch, color="grey", linestyle=":", linewidth=1)
    axes[-1, 0].set_xlabel("optimizer step")
    fig.suptitle(title or "training curves")
    path = _save(fig, path)
    plt.close(fig)
    return path


def plot_bars(groups: dict[str, dict[str, float]], path: str, title: str, ylabel: str = "score") -> str:
    """Grouped bars: {group (e.g. system): {metric: value}}."""
    plt = _pyplot()
    metrics = [m for m in dict.fromkeys(k for g in groups.values() for k in g)]
    width = 0.8 / max(1, len(groups))
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(metrics) + 2), 3.6))
    for i, (group, values) in enumerate(groups.items()):
        xs = [j + i * width for j in range(len(metrics))]
        heights = [values.get(m, 0.0) for m in metrics]
        bars = ax.bar(xs, heights, width, label=group)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks([j + width * (len(groups) - 1) / 2 for j in range(len(metrics))], metrics)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    path = _save(fig, path)
    plt.close(fig)
    return path


def plot_before_after(summary: dict, path: str) -> str:
    """eval_before / eval_after of train_summary.json (written by train.py)."""
    before, after = summary.get("eval_before") or {}, summary.get("eval_after") or {}
    if not before or not after:
        raise DataError("train_summary.json has no eval_before/eval_after; train with an eval set (the built-in "
                        "synthetic task has one) to get the before/after comparison.")
    keys = [k for k in (tags.EVAL_ACCURACY, tags.EVAL_EM) if k in before and k in after]
    return plot_bars({"before training": {k.split("/")[-1]: before[k] for k in keys},
                      "after training": {k.split("/")[-1]: after[k] for k in keys}},
                     path, f"held-out accuracy before and after {summary.get('steps', '?')} steps")


def run_before_after(summary: dict, curves: dict[str, list[tuple[int, float]]]) -> dict:
    """train_summary.json with eval_before / eval_after completed from the run's logged evaluations: a resumed
    run's summary has no eval_before (the evaluation at step 0 happened in the first part), but its logs do."""
    summary = dict(summary)
    keys = [k for k in (tags.EVAL_ACCURACY, tags.EVAL_EM) if curves.get(k)]
    if not summary.get("eval_before"):
        summary["eval_before"] = {k: dict(curves[k])[0] for k in keys if 0 in dict(curves[k])}
    if not summary.get("eval_after"):
        summary["eval_after"] = {k: curves[k][-1][1] for k in keys if curves[k][-1][0] > 0}
    if "steps" not in summary and keys:
        summary["steps"] = curves[keys[0]][-1][0]
    return summary


def plot_systems(metrics: dict[str, dict[str, float]], path: str,
                 keys: Sequence[str] = ("match", "em", "f1", "rouge_l", "judge")) -> str:
    """metrics.json of `scaledown eval`: ScaleDown beside uncompressed RAG and no documents."""
    groups = {system: {k: m[k] for k in keys if k in m} for system, m in metrics.items()}
    return plot_bars(groups, path, "answer quality by system")


def plot_latency(report: dict, path: str) -> str:
    """ms per query and speed-up vs documents per query (one line per batch size) from `scaledown bench latency`."""
    plt = _pyplot()
    results = report["results"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for batch in sorted({r["batch_size"] for r in results}):
        points = sorted((r for r in results if r["batch_size"] == batch), key=lambda r: r["documents"])
        docs = [r["documents"] for r in points]
        for name, style in (("compressed", "-o"), ("uncompressed", "--s")):
            ax1.plot(docs, [r[name]["ms_per_query"] for r in points], style, label=f"{name}, batch {batch}")
        ax2.plot(docs, [r["speedup"] for r in points], "-o", label=f"batch {batch}")
    ax1.set(xlabel="documents per query", ylabel="ms per query (log scale)", title="latency per query", yscale="log")
    ax2.set(xlabel="documents per query", ylabel="uncompressed / compressed", title="speed-up of compression")
    ax2.axhline(1.0, color="grey", linewidth=1)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    model = report.get("model", {})
    gen = model.get("generator", {})
    fig.suptitle(f"{gen.get('num_hidden_layers')}-layer generator ({model.get('generator_parameters', 0) / 1e6:.1f}M), "
                 f"{model.get('compressor_layers')}-layer compressor, {report['environment'].get('device')}")
    path = _save(fig, path)
    plt.close(fig)
    return path


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise DataError(f"{path} does not exist.")
    from scaledown.text_files import load_json
    return load_json(path, DataError)


def plot_main(argv: Optional[Sequence[str]] = None, prog: str = "scaledown plot") -> int:
    from scaledown.cli.args import FriendlyParser
    from scaledown.evaluation.tb_logs import read_scalars
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
    from scaledown.destination import check_destination
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
