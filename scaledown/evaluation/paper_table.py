# A results table in the layout of OSCAR's Table 1, the paper's rows first, so a model sits beside them.
"""Paper figures: OSCAR arXiv 2504.07109 v1 (reference/oscar.md §3), Mistral-7B-Instruct-v0.2 generator.
LLM-eval per dataset is published only for the uncompressed baseline and OSCAR-llama; the other rows
have their 6-dataset average (with BioASQ, marked *). Match (Table 3) is published as averages only.
"""
from __future__ import annotations

from typing import Optional

from scaledown.evaluation.qa_datasets import BENCHMARKS

COLUMNS = [b.title for b in BENCHMARKS.values()]   # ASQA, HotpotQA, NQ, TriviaQA, PopQA

PAPER_LLM_EVAL: dict[str, dict[str, float]] = {
    "Mistral-7B, no compression": {"ASQA": .82, "HotpotQA": .62, "NQ": .80, "TriviaQA": .90, "PopQA": .61,
                                   "avg6": .76, "tflops": 20.33},
    "RECOMP": {"avg6": .75, "tflops": 8.13},
    "Provence": {"avg6": .76, "tflops": 9.43},
    "PISCO (offline)": {"avg6": .74, "tflops": 3.49},
    "OSCAR-llama": {"ASQA": .82, "HotpotQA": .64, "NQ": .81, "TriviaQA": .91, "PopQA": .65,
                    "avg6": .77, "tflops": 6.15},
    "OSCAR-5L": {"avg6": .76, "tflops": 6.53},
    "OSCAR-8L": {"avg6": .77, "tflops": 8.36},
}
PAPER_MATCH: dict[str, dict[str, float]] = {
    "Mistral-7B, no compression": {"avg6": .68, "tflops": 20.33}, "RECOMP": {"avg6": .67, "tflops": 8.13},
    "Provence": {"avg6": .68, "tflops": 9.43}, "PISCO (offline)": {"avg6": .65, "tflops": 3.49},
    "OSCAR-llama": {"avg6": .68, "tflops": 6.15}, "OSCAR-8L": {"avg6": .68, "tflops": 8.36},
}
SYSTEM_LABELS = {"scaledown": "your model (compressed)", "uncompressed": "your generator, no compression",
                 "no_docs": "your generator, no documents"}


def _cell(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.2f}"


def _tflops(value: Optional[float]) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if value >= 0.01 else f"{value:.2g}"   # tiny models: significant digits


def format_table(results: dict[str, dict[str, dict[str, float]]], metric: str = "match",
                 tflops: Optional[dict[str, float]] = None, model_name: str = "") -> str:
    """Markdown table. results: {benchmark name: metrics.json}; metric: "match" or "judge"."""
    paper = PAPER_LLM_EVAL if metric == "judge" else PAPER_MATCH
    titles = {name: BENCHMARKS[name].title for name in results if name in BENCHMARKS}
    label = "LLM-eval (judge)" if metric == "judge" else "Match"
    lines = [f"| Backbone | Method | {' | '.join(COLUMNS)} | Avg | TFLOPs |",
             "| --- | --- |" + " --- |" * (len(COLUMNS) + 2)]
    for i, (method, row) in enumerate(paper.items()):
        backbone = "Mistral-7B (paper)" if i == 0 else ""
        cells = [_cell(row.get(c)) for c in COLUMNS]
        five = [row[c] for c in COLUMNS if c in row]
        avg = f"{sum(five) / len(five):.2f}" if len(five) == len(COLUMNS) else f"{row['avg6']:.2f}*"
        lines.append(f"| {backbone} | {method} | {' | '.join(cells)} | {avg} | {_tflops(row.get('tflops'))} |")
    systems = list(dict.fromkeys(s for m in results.values() for s in m))
    shown = None
    for i, system in enumerate(systems):
        by_title = {titles[n]: m[system].get(metric) for n, m in results.items() if n in titles and system in m}
        values = [v for v in by_title.values() if v is not None]
        avg = _cell(sum(values) / len(values)) if values else "–"
        model, _, kind = system.rpartition("|")   # "model|system" when several models share the table
        backbone = (model if model != shown else "") if model else (model_name if i == 0 else "")
        shown = model or shown
        lines.append(f"| {backbone} | {SYSTEM_LABELS.get(kind, kind)} | "
                     f"{' | '.join(_cell(by_title.get(c)) for c in COLUMNS)} | {avg} | "
                     f"{_tflops((tflops or {}).get(system))} |")
    notes = [f"Metric: {label}. Paper rows: OSCAR (arXiv 2504.07109) "
             f"{'Table 1 (LLM-eval, SOLAR-10.7B judge)' if metric == 'judge' else 'Table 3 (Match, averages only)'}; "
             f"* = paper average over 6 datasets (with BioASQ, not read here); Avg of other rows = the columns shown.",
             "TFLOPs per query at OSCAR's setup (128-token query, 10 documents, 32 generated tokens), counted by "
             "`scaledown bench flops` rules; your rows use your model's own shapes and prompt."]
    return "\n".join(lines + [""] + notes) + "\n"
