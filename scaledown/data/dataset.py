# ScaleDownDataset: rows of (query, documents, answer[, reranking_scores]) from lists, files or `datasets`.
from __future__ import annotations

import logging
from typing import Any, Optional, Sequence, Union

from torch.utils.data import Dataset

from scaledown.config import ScaleDownConfig
from scaledown.data.chunk_select import select_chunks, split_document
from scaledown.data.validation import read_rows, validate_rows
from scaledown.errors import DataError
from scaledown.models import loading
from scaledown.models.inputs import row_answer, text_ids

logger = logging.getLogger(__name__)


class ScaleDownDataset(Dataset):
    """Validated training/evaluation rows.

    `data` is a list of dicts, a .json/.jsonl/.parquet path, or a `datasets.Dataset`. Every row is
    checked at construction (errors name the file, row or line, field and fix). With a config, lengths
    are checked against it and every cut is counted in one warning per kind: documents longer than
    `doc_max_length` tokens (truncated, or split when `config.long_documents == "chunk"`, see
    chunk_select.py for which chunks are kept), documents beyond the per-query cap `num_documents`
    (default num_documents_train, num_documents_eval when no answer is required), queries longer than
    `query_max_length` and answers longer than `answer_max_length` (EOS included) tokens.
    `name` names the data in messages; `long_documents_fix` replaces the advice of the truncation warning.
    """

    def __init__(self, data: Union[str, Sequence[dict], Any], config: Optional[ScaleDownConfig] = None,
                 tokenizer=None, require_answer: bool = True, check_lengths: bool = True,
                 num_documents: Optional[int] = None, name: Optional[str] = None, generator_tokenizer=None,
                 long_documents_fix: Optional[str] = None):
        self.config = config
        self.source = name or (data if isinstance(data, str) else type(data).__name__)
        self.rows = validate_rows(_locate(data), require_answer=require_answer, source=self.source)
        self.num_truncated = 0            # documents longer than doc_max_length
        self.num_documents_dropped = 0    # documents or chunks beyond the per-query cap
        self.num_queries_truncated = 0
        self.num_answers_truncated = 0
        self.num_documents = sum(len(r["documents"]) for r in self.rows)
        if config is not None and check_lengths:
            cap = num_documents or (config.num_documents_train if require_answer else config.num_documents_eval)
            self._apply_lengths(tokenizer, generator_tokenizer, cap, require_answer,
                                long_documents_fix or "set long_documents='chunk' (--long_documents chunk) to split "
                                                      "them instead")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return self.rows[index]

    def _apply_lengths(self, tokenizer, generator_tokenizer, cap: int, with_answers: bool, fix: str) -> None:
        cfg = self.config
        if tokenizer is None:
            tokenizer = loading.load_tokenizer(cfg.compressor_tokenizer_name, cfg.trust_remote_code)
        if generator_tokenizer is None:
            name = cfg.tokenizer_name or cfg.generator_model_name
            generator_tokenizer = (tokenizer if name == cfg.compressor_tokenizer_name
                                   else loading.load_tokenizer(name, cfg.trust_remote_code))
        limit = cfg.doc_max_length
        flat = [" " + d.strip() for r in self.rows for d in r["documents"]]
        lengths = [len(ids) for ids in text_ids(tokenizer, flat)]
        self.num_truncated = sum(n > limit for n in lengths)
        chunked = cfg.long_documents == "chunk" and self.num_truncated
        if chunked:
            self._chunk(tokenizer, limit, cap)
            logger.warning("%s: %d of %d documents were longer than doc_max_length=%d tokens and were split into "
                           "chunks of that length; %d chunks beyond the %d per query were dropped (the chunks "
                           "least relevant to the query; see scaledown/data/chunk_select.py).", self.source,
                           self.num_truncated, len(flat), limit, self.num_documents_dropped, cap)
        elif self.num_truncated:
            logger.warning("%s: %d of %d documents are longer than doc_max_length=%d tokens and will be truncated; "
                           "%s.", self.source, self.num_truncated, len(flat), limit, fix)
        if not chunked:
            over = [len(r["documents"]) - cap for r in self.rows if len(r["documents"]) > cap]
            self.num_documents_dropped = sum(over)
            if over:
                logger.warning("%s: %d rows have more than %d documents; their %d documents after the first %d are "
                               "not used (num_documents_train / num_documents_eval cap them).", self.source,
                               len(over), cap, sum(over), cap)
        self._count_text_cuts(tokenizer, generator_tokenizer, with_answers)

    def _count_text_cuts(self, tokenizer, generator_tokenizer, with_answers: bool) -> None:
        """Queries are cut to query_max_length tokens (compressor and prompt), answers to answer_max_length
        (EOS included, as InputBuilder.answer_ids): count and report both."""
        cfg = self.config
        queries = [" " + r["query"].strip() for r in self.rows]
        tokenizers = [tokenizer] + ([generator_tokenizer] if generator_tokenizer is not tokenizer else [])
        longest = [max(n) for n in zip(*([len(ids) for ids in text_ids(t, queries)] for t in tokenizers))]
        self.num_queries_truncated = sum(n > cfg.query_max_length for n in longest)
        if self.num_queries_truncated:
            logger.warning("%s: %d of %d queries are longer than query_max_length=%d tokens (longest %d) and will be "
                           "truncated; raise --query_max_length to keep them whole.", self.source,
                           self.num_queries_truncated, len(queries), cfg.query_max_length, max(longest))
        answered = [r for r in self.rows if r.get("answer") is not None or r.get("answers")]
        if not with_answers or not answered:
            return
        lengths = [len(ids) + 1 for ids in text_ids(generator_tokenizer, [" " + row_answer(r).strip()
                                                                           for r in answered])]
        self.num_answers_truncated = sum(n > cfg.answer_max_length for n in lengths)
        if self.num_answers_truncated:
            logger.warning("%s: %d of %d answers are longer than answer_max_length=%d tokens (end-of-answer token "
                           "included; longest %d) and will be truncated in training; raise --answer_max_length to "
                           "train on them whole.", self.source, self.num_answers_truncated, len(answered),
                           cfg.answer_max_length, max(lengths))

    def _chunk(self, tokenizer, limit: int, cap: int) -> None:
        dropped = 0
        for row in self.rows:
            pieces = [split_document(tokenizer, doc, limit) or [doc.strip()] for doc in row["documents"]]
            split = any(len(p) > 1 for p in pieces)
            docs, scores, lost = select_chunks(row["query"], pieces, row.get("reranking_scores"),
                                               cap if split else None)
            if not split and len(docs) > cap:   # nothing split in this row: the plain cap, first documents first
                lost = len(docs) - cap
                docs, scores = docs[:cap], (scores[:cap] if scores is not None else None)
            dropped += lost
            row["documents"] = docs
            if scores is not None:
                row["reranking_scores"] = scores
        self.num_documents_dropped = dropped
        self.num_documents = sum(len(r["documents"]) for r in self.rows)


def _locate(data: Any) -> list[tuple[str, Any]]:
    """(where, row) pairs for error messages: 'file line N' (JSONL), 'file row N' or 'dataset row N'."""
    if isinstance(data, str):
        return read_rows(data)
    if isinstance(data, dict):
        raise DataError("ScaleDownDataset got a dict; pass a list of row dicts, a file path or a datasets.Dataset "
                        "(for a DatasetDict pick a split, e.g. data['train']).")
    if hasattr(data, "column_names") and hasattr(data, "__getitem__"):  # datasets.Dataset
        return [(f"dataset row {i}", data[i - 1]) for i in range(1, len(data) + 1)]
    if isinstance(data, (list, tuple)):
        if not data:
            raise DataError("ScaleDownDataset got an empty list; it needs at least one row.")
        return [(f"row {i}", row) for i, row in enumerate(data, start=1)]
    raise DataError(f"ScaleDownDataset cannot read a {type(data).__name__}; pass a list of dicts, a .json/.jsonl/"
                    f".parquet path or a datasets.Dataset.")
