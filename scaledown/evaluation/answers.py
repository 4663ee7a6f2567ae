# Generate answers for rows and score them (Match, EM, F1): held-out accuracy of a model.
from __future__ import annotations

from typing import Any, Optional, Sequence

from scaledown.evaluation.metrics import exact_match, gold_answers, match, token_f1


def score_predictions(predictions: Sequence[str], rows: Sequence[dict]) -> dict[str, float]:
    n = max(1, len(rows))
    golds = [gold_answers(r) for r in rows]
    return {
        "accuracy": sum(match(p, g) for p, g in zip(predictions, golds)) / n,   # BERGEN Match
        "exact_match": sum(exact_match(p, g) for p, g in zip(predictions, golds)) / n,
        "f1": sum(token_f1(p, g) for p, g in zip(predictions, golds)) / n,
    }


def predict(model, rows: Sequence[dict], documents_as: str = "memory", batch_size: int = 32,
            max_documents: Optional[int] = None, progress: bool = False,
            generation_kwargs: Optional[dict[str, Any]] = None) -> list[str]:
    """Greedy answers for `rows` (each with query and documents)."""
    was_training = model.training
    model.eval()
    out: list[str] = []
    starts = range(0, len(rows), batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc=f"answering ({documents_as})", unit="batch")
    try:
        for start in starts:
            chunk = rows[start:start + batch_size]
            batch = model.inputs.collate(chunk, mode=documents_as, with_answers=False, max_documents=max_documents)
            out += model.generate_from_batch(batch, documents_as, **(generation_kwargs or {}))
    finally:
        model.train(was_training)
    return out


def answer_accuracy(model, rows: Sequence[dict], documents_as: str = "memory", batch_size: int = 32,
                    max_documents: Optional[int] = None, progress: bool = False) -> dict[str, float]:
    predictions = predict(model, rows, documents_as, batch_size, max_documents, progress)
    return score_predictions(predictions, rows)
