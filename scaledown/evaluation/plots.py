# PNG plots: training curves (TensorBoard logs), accuracy before/after training, systems side by side, latency.
from __future__ import annotations

import os
from typing import Sequence

from scaledown.atomic_files import atomic_path
from scaledown.errors import DataError, require
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
