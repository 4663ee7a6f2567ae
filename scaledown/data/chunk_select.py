# long_documents='chunk': split each document into doc_max_length pieces and keep the pieces most relevant to the query.
"""What chunking keeps, and why.

A chunk is compressed like a document (one compressor pass, num_memory_tokens slots in the prompt), so
the per-query cap (num_documents_train in training, num_documents_eval in evaluation) is a budget of
chunks: the cost of a row stays what the config says. Keeping "the first K chunks" (what a plain cap
does) throws away everything after the first document's opening, which is where a long document's
answer usually is not. So the chunks of all the row's documents compete for the K places by their
relevance to the query: a BM25 score (idf over the row's chunks, so words every chunk has count for
little) of the query's words in the chunk. Ties go to the better-ranked document (its position in the
row), then to the earlier chunk. The kept chunks are ordered by that relevance, as a retriever's list.

A chunk inherits its document's reranking score: the teacher scored the whole document and there is
no finer signal; a chunk of a relevant document is treated as relevant.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Optional, Sequence

_WORD = re.compile(r"\w+", re.UNICODE)
_K1, _B = 1.2, 0.75   # BM25's usual constants


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def relevance(query: str, chunks: Sequence[str]) -> list[float]:
    """BM25 score of each chunk for the query, idf computed over `chunks` (the row's chunks)."""
    bags = [Counter(words(c)) for c in chunks]
    if not bags:
        return []
    average = sum(sum(b.values()) for b in bags) / len(bags) or 1.0
    scores = []
    terms = set(words(query))
    df = {t: sum(t in b for b in bags) for t in terms}
    for bag in bags:
        length = sum(bag.values())
        score = 0.0
        for t in terms:
            tf = bag.get(t, 0)
            if tf:
                idf = math.log(1 + (len(bags) - df[t] + 0.5) / (df[t] + 0.5))
                score += idf * tf * (_K1 + 1) / (tf + _K1 * (1 - _B + _B * length / average))
        scores.append(score)
    return scores


def split_document(tokenizer, text: str, limit: int) -> list[str]:
    """Pieces of at most `limit` tokens (±1 where BPE merges across a cut). A cut moves back, by at most half
    a window, to where a sentence starts, else to where a word starts, so a sentence shorter than half a
    window stays in one piece. Special-token strings in the text are text (inputs.text_ids)."""
    text = text.strip()
    source = " " + text
    encoded = tokenizer(source, add_special_tokens=False, split_special_tokens=True,
                        return_offsets_mapping=getattr(tokenizer, "is_fast", False))
    ids = encoded["input_ids"]
    if len(ids) <= limit:
        return [text] if text else []
    if "offset_mapping" not in encoded:   # slow tokenizer: cut at token boundaries and decode
        return [p for p in (tokenizer.decode(ids[i:i + limit]).strip() for i in range(0, len(ids), limit)) if p]
    starts = [start for start, _ in encoded["offset_mapping"]]
    pieces, first = [], 0
    while first < len(ids):
        stop = min(first + limit, len(ids))
        if stop < len(ids):
            floor = first + max(1, limit // 2)
            stop = (next((c for c in range(stop, floor - 1, -1) if _boundary(source, starts[c], sentence=True)), None)
                    or next((c for c in range(stop, floor - 1, -1) if _boundary(source, starts[c])), None) or stop)
        end = starts[stop] if stop < len(ids) else len(source)
        piece = source[starts[first]:end].strip()
        if piece:
            pieces.append(piece)
        first = stop
    return pieces


def _boundary(text: str, position: int, sentence: bool = False) -> bool:
    """Whether a token starting at `position` starts a word (or, with sentence=True, a sentence)."""
    while position < len(text) and text[position].isspace():
        position += 1
    before = position - 1
    if not sentence:
        return before < 0 or text[before].isspace()
    while before >= 0 and text[before].isspace():
        before -= 1
    return before < 0 or (text[before] in ".!?" and position - 1 > before)


def select_chunks(query: str, pieces: Sequence[Sequence[str]], scores: Optional[Sequence[float]],
                  budget: Optional[int]) -> tuple[list[str], Optional[list[float]], int]:
    """(kept chunks, their reranking scores or None, number dropped).

    pieces[j]: the chunks of document j (in order); scores[j]: document j's reranking score; budget: the
    per-query cap (None: keep every chunk, in document order)."""
    flat = [(j, i, chunk) for j, doc in enumerate(pieces) for i, chunk in enumerate(doc)]
    if budget is None or len(flat) <= budget:
        order = list(range(len(flat)))
    else:
        rel = relevance(query, [c for _, _, c in flat])
        order = sorted(range(len(flat)), key=lambda n: (-rel[n], flat[n][0], flat[n][1]))[:budget]
    kept = [flat[n][2] for n in order]
    kept_scores = [scores[flat[n][0]] for n in order] if scores is not None else None
    return kept, kept_scores, len(flat) - len(kept)
