# Reranking quality of the RR head: nDCG@10 and MRR against relevance labels or a teacher's scores.
"""Two references, reported under separate keys:

- labels: `relevance` in a row (one number per document, 0 = not relevant; graded values allowed).
  The KILT reader fills it (document from a gold provenance page, else containing a gold answer).
  Keys `ndcg@10` and `mrr` (reciprocal rank of the first relevant document).
- teacher: `reranking_scores` (the cross-encoder's, as in training). Gains for nDCG are the teacher
  scores min-max scaled per query (the teacher's own order scores 1); MRR is the reciprocal rank
  of the teacher's top document. Keys `ndcg@10_teacher` and `mrr_teacher`.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence


def _order(scores: Sequence[float]) -> list[int]:
    """Document indices by decreasing score; ties keep the retrieval order."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def dcg(gains: Sequence[float], k: int) -> float:
    return sum(g / math.log2(rank + 2) for rank, g in enumerate(list(gains)[:k]))


def ndcg_at_k(scores: Sequence[float], gains: Sequence[float], k: int = 10) -> Optional[float]:
    """nDCG@k of ranking documents by `scores`; None when no document has a positive gain."""
    ideal = dcg(sorted(gains, reverse=True), k)
    if ideal <= 0:
        return None
    return dcg([gains[i] for i in _order(scores)], k) / ideal


def reciprocal_rank(scores: Sequence[float], relevant: Sequence[bool]) -> Optional[float]:
    if not any(relevant):
        return None
    for rank, i in enumerate(_order(scores), start=1):
        if relevant[i]:
            return 1.0 / rank
    return None


def teacher_gains(teacher: Sequence[float]) -> list[float]:
    low, high = min(teacher), max(teacher)
    if high == low:
        return [1.0] * len(teacher)
    return [(t - low) / (high - low) for t in teacher]


def ranking_metrics(scores: Sequence[Sequence[float]], rows: Sequence[dict], k: int = 10) -> dict[str, float]:
    """Mean nDCG@k / MRR over the rows that have a reference (queries without any relevant document skipped)."""
    sums: dict[str, list[float]] = {f"ndcg@{k}": [], "mrr": [], f"ndcg@{k}_teacher": [], "mrr_teacher": []}
    for row_scores, row in zip(scores, rows):
        n = len(row_scores)
        labels = row.get("relevance")
        if labels is not None:
            gains = [float(g) for g in list(labels)[:n]]
            _add(sums[f"ndcg@{k}"], ndcg_at_k(row_scores, gains, k))
            _add(sums["mrr"], reciprocal_rank(row_scores, [g > 0 for g in gains]))
        teacher = row.get("reranking_scores")
        if teacher is not None and n:
            teacher = [float(t) for t in list(teacher)[:n]]
            _add(sums[f"ndcg@{k}_teacher"], ndcg_at_k(row_scores, teacher_gains(teacher), k))
            best = max(range(n), key=lambda i: teacher[i])
            _add(sums["mrr_teacher"], reciprocal_rank(row_scores, [i == best for i in range(n)]))
    return {key: sum(values) / len(values) for key, values in sums.items() if values}


def _add(values: list[float], value: Optional[float]) -> None:
    if value is not None:
        values.append(value)
