# Reranking needs teacher scores (OSCAR §3 distils the teacher's reranking scores into the RR head).
"""Decided with the other settings, before the config is validated: a preset that turns reranking on does not when
the user's training data carries no reranking_scores (cli/training_run.py asks has_reranking_scores). What is left
to check once the data is loaded is the user's own --enable_reranking (check_reranking_scores)."""
from __future__ import annotations

from scaledown.data.validation import read_rows
from scaledown.errors import DataError


def has_reranking_scores(path: str) -> bool:
    """Whether any row of the data file `path` (.json / .jsonl / .parquet) carries reranking_scores. Stops at the
    first one (prepared data has them on every row). Raises DataError naming the file for a damaged file."""
    return any(isinstance(row, dict) and row.get("reranking_scores") is not None for _, row in read_rows(path))


def check_reranking_scores(config, dataset) -> None:
    """Before training: with enable_reranking on and no row of `dataset` carrying reranking_scores, the RR head
    would be trained towards nothing. Raises DataError naming the file and the fix; never changes `config`."""
    if not config.enable_reranking or any(r.get("reranking_scores") is not None for r in dataset.rows):
        return
    raise DataError(f"enable_reranking is on but no row of {dataset.source} has 'reranking_scores' (one teacher "
                    f"score per document) to learn from. Add them (prepare_dataset writes them), or pass "
                    f"--enable_reranking false.")
