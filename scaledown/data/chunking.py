# Split corpus documents into passages of at most --chunk_tokens tokens (title included), OSCAR: 128.
"""Each passage is "{title}: {text piece}" and its token count, title included, stays within
chunk_tokens (±1 where BPE merges across the join), so a passage fits the compressor's
doc_max_length when the chunking tokenizer is the generator's. Pieces are cut at token
boundaries of the original text (via offsets), preferably where a word starts, so no text is
re-decoded, lost or split inside a word.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

from scaledown.data.corpus import CorpusDocument
from scaledown.errors import ConfigError

TITLE_SEPARATOR = ": "
MIN_TEXT_TOKENS = 16     # a very long title still leaves room for this much text per passage


@dataclass(frozen=True)
class Passage:
    doc_id: str
    chunk: int          # index of the piece within its document
    title: str
    document: str       # the text training rows carry: "{title}: {piece}" (or the piece when untitled)


def format_document(title: str, text: str) -> str:
    return f"{title}{TITLE_SEPARATOR}{text}" if title else text


def piece_spans(offsets: list[tuple[int, int]], text: str, budget: int) -> list[tuple[int, int]]:
    """Character spans of consecutive windows of at most `budget` tokens, each running to the next
    one's start. A cut moves back (by at most half a window) to a token that starts a word."""
    spans, first, count = [], 0, len(offsets)
    while first < count:
        stop = min(first + budget, count)
        if stop < count:
            cut = stop
            while cut > first + budget // 2 and not _starts_word(text, offsets[cut][0]):
                cut -= 1
            if _starts_word(text, offsets[cut][0]) and cut > first:
                stop = cut
        spans.append((offsets[first][0], offsets[stop][0] if stop < count else len(text)))
        first = stop
    return spans


def _starts_word(text: str, position: int) -> bool:
    return position == 0 or text[position].isspace() or text[position - 1].isspace()


def check_tokenizer(tokenizer, name: str) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"the chunking tokenizer '{name}' is not a fast (Rust) tokenizer, so it cannot give the "
                          f"character offsets chunking needs. Pass --chunk_tokenizer with a model that has one.")


def chunk_documents(documents: Iterable[CorpusDocument], tokenizer, chunk_tokens: int,
                    batch_size: int = 256) -> Iterator[Passage]:
    """Passages of every document, in corpus order; tokenises `batch_size` documents at a time."""
    if chunk_tokens < MIN_TEXT_TOKENS:
        raise ConfigError(f"--chunk_tokens {chunk_tokens} is too small; use at least {MIN_TEXT_TOKENS} (OSCAR: 128).")
    batch: list[CorpusDocument] = []
    for document in documents:
        batch.append(document)
        if len(batch) == batch_size:
            yield from _chunk_batch(batch, tokenizer, chunk_tokens)
            batch = []
    if batch:
        yield from _chunk_batch(batch, tokenizer, chunk_tokens)


def _chunk_batch(batch: list[CorpusDocument], tokenizer, chunk_tokens: int) -> Iterator[Passage]:
    # corpus text is text: '</s>' or '[SEP]' in it counts as the tokens the model will read (inputs.text_ids)
    encoded = tokenizer([d.text for d in batch], add_special_tokens=False, return_offsets_mapping=True,
                        split_special_tokens=True)
    titles = tokenizer([format_document(d.title, "") for d in batch], add_special_tokens=False,
                       split_special_tokens=True)["input_ids"]
    for document, offsets, title_ids in zip(batch, encoded["offset_mapping"], titles):
        budget = max(chunk_tokens - len(title_ids), MIN_TEXT_TOKENS)
        chunk = 0
        for start, end in piece_spans(list(offsets), document.text, budget):
            piece = document.text[start:end].strip()
            if piece:
                yield Passage(document.doc_id, chunk, document.title, format_document(document.title, piece))
                chunk += 1

