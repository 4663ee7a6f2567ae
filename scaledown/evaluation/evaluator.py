# The evaluator: answer rows with ScaleDown and its baselines, score every answer, write predictions and metrics.
"""Systems (same generator, same rows, same greedy decoding):

  scaledown     documents compressed into memory embeddings (what the model was trained for)
  uncompressed  the documents' text in the prompt (uncompressed RAG), the cost compression saves
  no_docs       no documents at all, the floor that shows what the documents bring

Outputs (`write_outputs`): `predictions.jsonl` (one line per example with every system's answer and
scores) and `metrics.json` ({system: {em, f1, rouge_l, match[, judge][, ndcg@10, mrr...], n, seconds}}).
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch

from scaledown.atomic_files import write_text
from scaledown.errors import DataError
from scaledown.evaluation.answers import mean_scores, per_example_scores, predict
from scaledown.evaluation.metrics import METRICS, gold_answers
from scaledown.evaluation.ranking import ranking_metrics

SYSTEMS: dict[str, str] = {"scaledown": "memory", "uncompressed": "text", "no_docs": "none"}


@dataclass
class EvalResult:
    metrics: dict[str, dict[str, float]]                      # system -> metric -> value
    records: list[dict[str, Any]] = field(default_factory=list)   # one per example


def check_eval_rows(rows: Sequence[dict], source: str = "data") -> None:
    """Every row needs a gold answer to be scored, and `relevance` (if any) one number per document."""
    for i, row in enumerate(rows, start=1):
        where = f"{source} row {row.get('id', i)}"
        if not gold_answers(row):
            raise DataError(f"{where}: no gold answer to score against; give 'answer' (string) or 'answers' "
                            f"(list of strings).")
        relevance = row.get("relevance")
        if relevance is not None and (not isinstance(relevance, (list, tuple)) or len(relevance) != len(row["documents"])
                                      or not all(isinstance(x, (int, float)) for x in relevance)):
            raise DataError(f"{where}: 'relevance' must be a list of numbers, one per document "
                            f"({len(row['documents'])}).")


@torch.no_grad()
def rerank_scores(model, rows: Sequence[dict], batch_size: int, max_documents: Optional[int],
                  autocast: Optional[Callable] = None) -> list[list[float]]:
    """The RR head's score of each real document of each row."""
    out: list[list[float]] = []
    for start in range(0, len(rows), batch_size):
        batch = model.inputs.collate(rows[start:start + batch_size], mode="memory", with_answers=False,
                                     max_documents=max_documents)
        batch = {k: v.to(model.device) for k, v in batch.items()}
        with (autocast() if autocast else contextlib.nullcontext()):
            _, scores = model.compress_batch(batch)
        for row_scores, mask in zip(scores.float().cpu(), batch["document_mask"].cpu()):
            out.append([float(s) for s, real in zip(row_scores, mask) if real])
    return out


def evaluate_systems(model, rows: Sequence[dict], systems: Sequence[str] = ("scaledown",), batch_size: int = 16,
                     max_documents: Optional[int] = None, generation_kwargs: Optional[dict] = None,
                     judge=None, progress: bool = True, autocast: Optional[Callable] = None) -> EvalResult:
    """Answer every row with each system, score the answers (and the RR head's ranking when the model has one)."""
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        raise ValueError(f"unknown systems {unknown}; choose from {list(SYSTEMS)}")
    rows = list(rows)
    golds = [gold_answers(r) for r in rows]
    predictions: dict[str, list[str]] = {}
    scores: dict[str, list[dict[str, float]]] = {}
    metrics: dict[str, dict[str, float]] = {}
    for system in systems:
        start = time.perf_counter()
        predictions[system] = predict(model, rows, SYSTEMS[system], batch_size, max_documents, progress,
                                      generation_kwargs, autocast)
        seconds = time.perf_counter() - start
        scores[system] = per_example_scores(predictions[system], rows)
        keys = list(METRICS)
        if judge is not None:
            grades = judge.score([r["query"] for r in rows], golds, predictions[system], progress)
            for s, g in zip(scores[system], grades):
                s["judge"] = g
            keys.append("judge")
        metrics[system] = {**mean_scores(scores[system], keys), "n": len(rows), "seconds": round(seconds, 3)}
    ranking: Optional[list[list[float]]] = None
    if model.config.enable_reranking and "scaledown" in systems:
        ranking = rerank_scores(model, rows, batch_size, max_documents, autocast)
        metrics["scaledown"].update(ranking_metrics(ranking, rows))
    records = []
    for i, row in enumerate(rows):
        record = {"id": row.get("id", i), "query": row["query"], "answers": golds[i],
                  "predictions": {s: predictions[s][i] for s in systems},
                  "scores": {s: scores[s][i] for s in systems}}
        if ranking is not None:
            record["rerank_scores"] = ranking[i]
        records.append(record)
    return EvalResult(metrics, records)


def write_outputs(result: EvalResult, output_dir: str) -> tuple[str, str]:
    """predictions.jsonl and metrics.json, each written to a temporary name and renamed (never half a file)."""
    os.makedirs(output_dir, exist_ok=True)
    predictions = os.path.join(output_dir, "predictions.jsonl")
    metrics = os.path.join(output_dir, "metrics.json")
    write_text(predictions, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.records))
    write_text(metrics, json.dumps(result.metrics, indent=2) + "\n")
    return predictions, metrics


