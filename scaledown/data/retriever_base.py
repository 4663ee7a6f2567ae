# The retriever contract (Hit, Retriever) and helpers its implementations share (BM25, SPLADE; data/retrieval.py).
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence


@dataclass(frozen=True, order=True)
class Hit:
    index: int      # position of the passage in the indexed collection
    score: float


class Retriever:
    """Base class: an index folder, built in parts, searched as a whole."""
    kind = "base"

    def __init__(self, directory: str, model: Optional[str] = None):
        self.directory = directory
        self.model = model

    # subclasses implement these four
    def plan_parts(self, num_passages: int) -> list[tuple[int, int]]:
        raise NotImplementedError

    def build_part(self, passages, start: int, stop: int, out_dir: str, progress: bool) -> None:
        raise NotImplementedError

    def load(self, parts: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """What the index depends on besides the passages (kind, model, options)."""
        return {"kind": self.kind, "model": self.model}


def documents_of(passages, start: int, stop: int, batch: int) -> Iterable[list[str]]:
    """Batches of passage texts in [start, stop), from a PassageStore or a list."""
    if hasattr(passages, "iter_documents"):
        yield from passages.iter_documents(start, stop, batch)
        return
    for offset in range(start, stop, batch):
        yield list(passages[offset:min(offset + batch, stop)])


def merge_hits(candidates: Iterable[Hit], k: int) -> list[Hit]:
    """The k best hits: highest score first, ties by lower passage index (split-independent)."""
    return heapq.nsmallest(k, candidates, key=lambda h: (-h.score, h.index))
