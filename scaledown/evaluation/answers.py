# Generate answers for rows and score them (Match, EM, F1, ROUGE-L): held-out accuracy of a model.
from __future__ import annotations

import contextlib
from typing import Any, Optional, Sequence

from tqdm.auto import tqdm

from scaledown.evaluation.metrics import METRICS, answer_scores, gold_answers
from scaledown.progress import show_progress


def per_example_scores(predictions: Sequence[str], rows: Sequence[dict]) -> list[dict[str, float]]:
    return [answer_scores(p, gold_answers(r)) for p, r in zip(predictions, rows)]


def mean_scores(scores: Sequence[dict[str, float]], keys: Sequence[str] = METRICS) -> dict[str, float]:
    n = max(1, len(scores))
    return {k: sum(s[k] for s in scores) / n for k in keys}


def score_predictions(predictions: Sequence[str], rows: Sequence[dict]) -> dict[str, float]:
    """Mean scores under the trainer's names (accuracy = BERGEN Match) plus rouge_l."""
    means = mean_scores(per_example_scores(predictions, rows))
    return {"accuracy": means["match"], "exact_match": means["em"], "f1": means["f1"], "rouge_l": means["rouge_l"]}


def predict(model, rows: Sequence[dict], documents_as: str = "memory", batch_size: int = 32,
            max_documents: Optional[int] = None, progress: bool = False,
            generation_kwargs: Optional[dict[str, Any]] = None, autocast=None) -> list[str]:
    """Greedy answers for `rows` (each with query and documents); `autocast` is a context factory or None."""
    was_training = model.training
    model.eval()
    out: list[str] = []
    starts = range(0, len(rows), batch_size)
    if show_progress(progress):
        starts = tqdm(starts, desc=f"answering ({documents_as})", unit="batch")
    try:
        for start in starts:
            chunk = rows[start:start + batch_size]
            batch = model.inputs.collate(chunk, mode=documents_as, with_answers=False, max_documents=max_documents)
            with (autocast() if autocast else contextlib.nullcontext()):
                out += model.generate_from_batch(batch, documents_as, **(generation_kwargs or {}))
    finally:
        model.train(was_training)
    return out


def answer_accuracy(model, rows: Sequence[dict], documents_as: str = "memory", batch_size: int = 32,
                    max_documents: Optional[int] = None, progress: bool = False) -> dict[str, float]:
    predictions = predict(model, rows, documents_as, batch_size, max_documents, progress)
    return score_predictions(predictions, rows)
