# BM25 retrieval through `bm25s` (sparse scipy matrices, memory-mapped on load): the offline retriever.
from __future__ import annotations

import os
from typing import Any, Optional, Sequence

from scaledown.data.retriever_base import Hit, Retriever, documents_of, merge_hits

STOPWORDS = "en"


def _tokenize(texts: Sequence[str]):
    import bm25s
    return bm25s.tokenize(list(texts), stopwords=STOPWORDS, return_ids=False, show_progress=False)


class BM25Retriever(Retriever):
    """Lucene-variant BM25 (k1=1.5, b=0.75) over lower-cased words without English stopwords; one part."""
    kind = "bm25"

    def __init__(self, directory: str, model: Optional[str] = None, k1: float = 1.5, b: float = 0.75, **_: Any):
        super().__init__(directory, model=None)
        self.k1, self.b = k1, b
        self._parts: list[tuple[int, Any]] = []

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "k1": self.k1, "b": self.b, "stopwords": STOPWORDS}

    def plan_parts(self, num_passages: int) -> list[tuple[int, int]]:
        return [(0, num_passages)]  # bm25s needs the whole collection's statistics at once

    def build_part(self, passages, start: int, stop: int, out_dir: str, progress: bool) -> None:
        import bm25s
        tokens: list[list[str]] = []
        for batch in documents_of(passages, start, stop, 8192):
            tokens += _tokenize(batch)
        index = bm25s.BM25(k1=self.k1, b=self.b)
        index.index(tokens, show_progress=progress)
        index.save(out_dir, show_progress=False)

    def load(self, parts: list[dict[str, Any]]) -> None:
        import bm25s
        self._parts = [(part["start"], bm25s.BM25.load(os.path.join(self.directory, part["dir"]), mmap=True,
                                                       show_progress=False))
                       for part in parts]
        self.num_passages = sum(part["stop"] - part["start"] for part in parts)

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Top-k passages of each query; passages sharing no word with the query (score 0) are left out."""
        tokens = _tokenize(queries)
        results: list[list[Hit]] = [[] for _ in queries]
        for start, index in self._parts:
            depth = min(k, index.scores["num_docs"])
            ids, scores = index.retrieve(tokens, k=depth, show_progress=False, n_threads=1)
            for row, (row_ids, row_scores) in enumerate(zip(ids, scores)):
                results[row] += [Hit(start + int(i), float(s)) for i, s in zip(row_ids, row_scores) if s > 0]
        return [merge_hits(hits, k) for hits in results]
