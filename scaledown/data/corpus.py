# Read a retrieval corpus: the KILT knowledge source (JSON lines) or any JSONL / parquet file with a text field.
"""A KILT line is {"_id"/"wikipedia_id", "wikipedia_title", "text": [paragraph, ...]} whose first
paragraph repeats the title; other corpora give {"id", "title", "text": "..."} (or pyserini's
"contents"). Every document keeps its id (the line number when it has none) and title.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional

from scaledown.data.bad_rows import BadRows
from scaledown.data.records import check_input_file, iter_records

TEXT_FIELDS = ("text", "contents")
ID_FIELDS = ("id", "_id", "wikipedia_id", "docid")
TITLE_FIELDS = ("title", "wikipedia_title")


@dataclass(frozen=True)
class CorpusDocument:
    where: str      # 'kilt.jsonl line 12', for messages
    doc_id: str
    title: str
    text: str


def _first(record: dict, keys: tuple[str, ...]) -> Optional[Any]:
    for key in keys:
        if record.get(key) is not None:
            return record[key]
    return None


def document_text(value: Any, title: str) -> Optional[str]:
    """A string, or KILT's paragraph list joined with spaces (its title paragraph dropped); None if unusable."""
    if isinstance(value, str):
        return " ".join(value.split())
    if isinstance(value, (list, tuple)) and all(isinstance(p, str) for p in value):
        paragraphs = [" ".join(p.split()) for p in value]
        if paragraphs and title and paragraphs[0] == " ".join(title.split()):
            paragraphs = paragraphs[1:]
        return " ".join(p for p in paragraphs if p)
    return None


def iter_corpus(path: str, bad: BadRows, flag: str = "--corpus_path") -> Iterator[CorpusDocument]:
    """The usable documents of a corpus file; bad rows go to `bad` (error with file and line, or skip)."""
    check_input_file(path, flag, "corpus")
    yield from corpus_documents(iter_records(path, bad), bad)


def corpus_documents(records: Iterable[tuple[str, dict]], bad: BadRows) -> Iterator[CorpusDocument]:
    """(where, record) pairs from any source (a file, a `datasets.Dataset`) -> the usable documents."""
    for number, (where, record) in enumerate(records, start=1):
        raw = _first(record, TEXT_FIELDS)
        if raw is None:
            bad.report(where, "rows without a text field", f"no text field (expected one of {list(TEXT_FIELDS)}; "
                                                           f"got fields {sorted(record)[:8]})")
            continue
        title_value = _first(record, TITLE_FIELDS)
        title = " ".join(str(title_value).split()) if title_value is not None else ""
        text = document_text(raw, title)
        if text is None:
            bad.report(where, "rows with a malformed text field", f"field 'text' must be a string or a list of "
                                                                  f"paragraph strings, got {type(raw).__name__}")
            continue
        if not text:
            bad.report(where, "empty passages", "the text is empty; drop the row or give its text")
            continue
        doc_id = _first(record, ID_FIELDS)
        yield CorpusDocument(where, str(doc_id) if doc_id is not None else str(number), title, text)
