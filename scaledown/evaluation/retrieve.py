# Retrieval for evaluation: a passage corpus and a thin Retriever interface, with BM25 (bm25s) offline.
"""`Retriever.retrieve(queries, k)` returns the top-k `Passage`s of each query. BM25 needs no model
and no network, so it is the default; the data pipeline's retrievers (SPLADE, dense) plug in through
the same one-method interface (`register_retriever`).

Corpus files (.jsonl, or a .json list), one passage per record, in either layout:
  {"id": "...", "title": "...", "text": "..."}                      (a passage corpus, e.g. KILT-100w)
  {"wikipedia_id": "...", "wikipedia_title": "...", "text": ["paragraph", ...]}   (KILT knowledge source:
                                                                     pages are cut into passages of 100 words)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence

from scaledown.errors import DataError

PASSAGE_WORDS = 100   # KILT-100w, BERGEN's Wikipedia-KILT passages


@dataclass
class Passage:
    text: str
    title: str = ""
    page_id: Optional[str] = None   # Wikipedia page id (KILT provenance) when known

    def as_document(self) -> str:
        return f"{self.title}: {self.text}" if self.title else self.text


class Retriever(Protocol):
    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Passage]]: ...


def _page_passages(record: dict, where: str) -> list[Passage]:
    title = str(record.get("wikipedia_title") or record.get("title") or "")
    page_id = record.get("wikipedia_id", record.get("id", record.get("_id")))
    page_id = None if page_id is None else str(page_id)
    text = record.get("text", record.get("contents"))
    if isinstance(text, list):  # KILT knowledge source: a page of paragraphs, cut into 100-word passages
        words = " ".join(str(p).strip() for p in text).split()
        return [Passage(" ".join(words[i:i + PASSAGE_WORDS]), title, page_id)
                for i in range(0, len(words), PASSAGE_WORDS)]
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: a corpus record needs a non-empty 'text' (string, or a list of paragraphs for "
                        f"the KILT knowledge source); got {type(text).__name__}.")
    return [Passage(text.strip(), title, page_id)]


def read_corpus(path: str) -> list[Passage]:
    """Passages of a corpus file (see the module docstring for the layouts)."""
    from scaledown.data.validation import read_rows
    passages: list[Passage] = []
    for where, record in read_rows(path):
        if not isinstance(record, dict):
            raise DataError(f"{where}: a corpus record must be an object with 'text' (and 'title', 'id').")
        passages += _page_passages(record, where)
    if not passages:
        raise DataError(f"{path} holds no passages; give records with a non-empty 'text'.")
    return passages


class BM25Retriever:
    """Lexical BM25 over the passages (title + text), English stop words removed."""

    def __init__(self, passages: Sequence[Passage]):
        import bm25s
        self.passages = list(passages)
        self._bm25s = bm25s
        tokens = bm25s.tokenize([p.as_document() for p in self.passages], stopwords="en", show_progress=False)
        self.index = bm25s.BM25()
        self.index.index(tokens, show_progress=False)

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Passage]]:
        k = min(k, len(self.passages))
        tokens = self._bm25s.tokenize(list(queries), stopwords="en", show_progress=False)
        ids, _ = self.index.retrieve(tokens, k=k, show_progress=False)
        return [[self.passages[int(i)] for i in row] for row in ids]


_RETRIEVERS: dict[str, Callable[[list[Passage]], Retriever]] = {"bm25": BM25Retriever}


def register_retriever(name: str, factory: Callable[[list[Passage]], Retriever]) -> None:
    """Make `--retriever NAME` build `factory(passages)` (e.g. the data pipeline's SPLADE retriever)."""
    _RETRIEVERS[name] = factory


def build_retriever(name: str, corpus_path: str) -> Retriever:
    if name not in _RETRIEVERS:
        raise DataError(f"--retriever {name!r} is unknown; available: {', '.join(sorted(_RETRIEVERS))}.")
    return _RETRIEVERS[name](read_corpus(corpus_path))
