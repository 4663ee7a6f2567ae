# Retrieval for evaluation through the data pipeline: corpus -> passage store -> BM25/SPLADE index -> top-k.
"""The same chunking (doc_max_length tokens of the model's tokenizer, "title: text"), passage store
and retrievers as `scaledown prepare-data` (scaledown.data.passage_store / retrieval), so evaluation
documents look like training documents. The store and index are kept in `index_dir` and reused by
the next run on the same corpus. Corpus layouts: see scaledown.data.corpus (KILT knowledge source,
or .jsonl/.json/.parquet records with "text" and optional "id"/"title").
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence

from scaledown.data.bad_rows import BadRows
from scaledown.data.passage_store import PassageStore
from scaledown.data.prep_models import resolve_retriever
from scaledown.data.retrieval import open_retriever


@dataclass
class Passage:
    text: str                       # what the model reads: "title: piece of text"
    page_id: Optional[str] = None   # the corpus document's id (Wikipedia page id for KILT provenance)

    def as_document(self) -> str:
        return self.text


class CorpusRetriever:
    """`retrieve(queries, k)` -> the top-k passages of each query, best first (fewer if BM25 finds fewer)."""

    def __init__(self, corpus_path: str, index_dir: str, tokenizer, tokenizer_name: str, chunk_tokens: int,
                 kind: str = "bm25", model: Optional[str] = None, skip_bad_rows: bool = False,
                 progress: bool = True):
        bad = BadRows(skip_bad_rows)
        self.store = PassageStore.build(os.path.join(index_dir, "passages"), corpus_path, tokenizer, tokenizer_name,
                                        chunk_tokens, bad, progress=progress)
        summary = bad.summary("corpus rows")
        if summary:
            print(summary, flush=True)
        folder = kind if model is None else f"{kind}-{model.replace('/', '--')}"
        self.retriever = open_retriever(kind, os.path.join(index_dir, folder), self.store, model=model,
                                        progress=progress)
        self._doc_ids = self.store.table.column("doc_id").to_pylist()

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Passage]]:
        hits = self.retriever.search(list(queries), k)
        needed = sorted({h.index for row in hits for h in row})
        by_index = dict(zip(needed, self.store.documents(needed)))
        return [[Passage(by_index[h.index], self._doc_ids[h.index]) for h in row] for row in hits]


def open_corpus_retriever(args, tokenizer, tokenizer_name: str, chunk_tokens: int) -> CorpusRetriever:
    """From `scaledown eval` flags: --corpus, --index_dir, --retriever, --retriever_model (as prepare-data)."""
    kind, model = resolve_retriever(args)
    index_dir = args.index_dir or os.path.join(args.output, "index")
    return CorpusRetriever(args.corpus, index_dir, tokenizer, tokenizer_name, chunk_tokens, kind, model,
                           args.skip_bad_rows, progress=not args.no_progress)
