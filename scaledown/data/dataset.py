# ScaleDownDataset: rows of (query, documents, answer[, reranking_scores]) from lists, files or `datasets`.
from __future__ import annotations

import logging
from typing import Any, Optional, Sequence, Union

from torch.utils.data import Dataset

from scaledown.config import ScaleDownConfig
from scaledown.data.validation import read_rows, validate_rows
from scaledown.errors import DataError

logger = logging.getLogger(__name__)


class ScaleDownDataset(Dataset):
    """Validated training/evaluation rows.

    `data` is a list of dicts, a .json/.jsonl/.parquet path, or a `datasets.Dataset`. Every row is
    checked at construction (errors name the file, row or line, field and fix). With a config,
    documents longer than `doc_max_length` tokens are counted and truncated (one warning), or split
    into several documents when `config.long_documents == "chunk"`.
    """

    def __init__(self, data: Union[str, Sequence[dict], Any], config: Optional[ScaleDownConfig] = None,
                 tokenizer=None, require_answer: bool = True, check_lengths: bool = True):
        self.config = config
        self.source = data if isinstance(data, str) else type(data).__name__
        self.rows = validate_rows(_locate(data), require_answer=require_answer, source=self.source)
        self.num_truncated = 0
        self.num_documents = sum(len(r["documents"]) for r in self.rows)
        if config is not None and check_lengths:
            self._apply_document_length(tokenizer)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return self.rows[index]

    def _apply_document_length(self, tokenizer) -> None:
        if tokenizer is None:
            from scaledown.models import loading
            tokenizer = loading.load_tokenizer(self.config.compressor_tokenizer_name, self.config.trust_remote_code)
        limit = self.config.doc_max_length
        flat = [" " + d.strip() for r in self.rows for d in r["documents"]]
        lengths = [len(ids) for ids in tokenizer(flat, add_special_tokens=False)["input_ids"]]
        self.num_truncated = sum(n > limit for n in lengths)
        if not self.num_truncated:
            return
        if self.config.long_documents == "chunk":
            self._chunk(tokenizer, limit)
            logger.warning("%s: %d of %d documents were longer than doc_max_length=%d tokens and were split into "
                           "chunks of that length.", self.source, self.num_truncated, len(flat), limit)
        else:
            logger.warning("%s: %d of %d documents are longer than doc_max_length=%d tokens and will be truncated; "
                           "set long_documents='chunk' (--long_documents chunk) to split them instead.",
                           self.source, self.num_truncated, len(flat), limit)

    def _chunk(self, tokenizer, limit: int) -> None:
        for row in self.rows:
            docs, scores = [], []
            row_scores = row.get("reranking_scores")
            for j, doc in enumerate(row["documents"]):
                ids = tokenizer(" " + doc.strip(), add_special_tokens=False)["input_ids"]
                pieces = [tokenizer.decode(ids[i:i + limit]).strip() for i in range(0, len(ids), limit)] or [doc]
                docs += [p for p in pieces if p]
                if row_scores is not None:
                    scores += [row_scores[j]] * len([p for p in pieces if p])
            row["documents"] = docs
            if row_scores is not None:
                row["reranking_scores"] = scores
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
