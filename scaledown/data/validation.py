# Read and validate training files: every bad row is an error naming file, row/line, field and fix.
from __future__ import annotations

import json
import math
import os
from typing import Any, Iterable, Optional

from scaledown.errors import DataError, require
from scaledown.text_files import iter_json_lines, read_text

ROW_HELP = ('each row is {"query": str, "documents": [str, ...], "answer": str, '
            '"reranking_scores": [number, ...] (optional)}')


def read_rows(path: str) -> list[tuple[str, dict]]:
    """Rows of a .json (list), .jsonl (one row a line) or .parquet file, each with its location text."""
    if not os.path.exists(path):
        raise DataError(f"{path} does not exist. Pass a JSON/JSONL file of rows ({ROW_HELP}), "
                        f"or write one with `python -m scaledown.data.prepare_dataset`.")
    if os.path.isdir(path):
        raise DataError(f"{path} is a folder; pass a .json, .jsonl or .parquet file.")
    if path.endswith(".parquet"):
        return _read_parquet(path)
    if path.endswith((".jsonl", ".jsonl.gz")):
        return _read_jsonl(path)   # streamed line by line
    text = read_text(path)
    if not text.strip():
        raise DataError(f"{path} is empty; it must hold rows ({ROW_HELP}).")
    try:
        data = json.loads(text, strict=False)
    except json.JSONDecodeError as exc:
        if _looks_like_jsonl(text):
            return _read_jsonl(path)
        raise DataError(f"{path} line {exc.lineno} column {exc.colno}: malformed JSON ({exc.msg}). "
                        f"Fix the JSON there (a missing comma or quote is the usual cause).") from None
    if isinstance(data, dict):
        raise DataError(f"{path} holds a top-level object with keys {sorted(data)[:5]}, not a list of rows. "
                        f"Wrap the rows in a JSON list: [{{...}}, {{...}}] ({ROW_HELP}).")
    if not isinstance(data, list):
        raise DataError(f"{path} holds a JSON {type(data).__name__}, not a list of rows ({ROW_HELP}).")
    if not data:
        raise DataError(f"{path} holds an empty list; it needs at least one row ({ROW_HELP}).")
    return [(f"{path} row {i}", row) for i, row in enumerate(data, start=1)]


def _looks_like_jsonl(text: str) -> bool:
    lines = [l for l in text.split("\n") if l.strip()]   # JSON Lines end at '\n' only
    return len(lines) > 1 and all(l.lstrip().startswith("{") for l in lines[:2])


def _raise_bad_line(where: str, reason: str, detail: str) -> None:
    raise DataError(f"{where}: {detail}.")


def _read_jsonl(path: str) -> list[tuple[str, dict]]:
    rows = list(iter_json_lines(path, _raise_bad_line))
    if not rows:
        raise DataError(f"{path} has no rows; it needs at least one ({ROW_HELP}).")
    return rows


def _read_parquet(path: str) -> list[tuple[str, dict]]:
    pq = require("pyarrow.parquet", "data", f"Reading the parquet file {path}")
    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise DataError(f"{path} is not a readable parquet file ({exc}).") from None
    rows = table.to_pylist()
    if not rows:
        raise DataError(f"{path} has no rows; it needs at least one ({ROW_HELP}).")
    return [(f"{path} row {i}", row) for i, row in enumerate(rows, start=1)]


def validate_row(row: Any, where: str, require_answer: bool = True) -> dict:
    """Check one row; return it with documents as a list. `where` is e.g. 'data.json row 3'."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object, got {type(row).__name__}; {ROW_HELP}.")
    for key in ("query", "documents"):
        if key not in row:
            raise DataError(f"{where}: missing field '{key}'; {ROW_HELP}.")
    query = row["query"]
    if not isinstance(query, str):
        raise DataError(f"{where}: field 'query' must be a string, got {type(query).__name__}.")
    if not query.strip():
        raise DataError(f"{where}: field 'query' is empty; give the question text.")
    documents = row["documents"]
    if isinstance(documents, str):
        raise DataError(f"{where}: field 'documents' must be a list of strings, got one string; wrap it: [\"...\"].")
    if not isinstance(documents, (list, tuple)):
        raise DataError(f"{where}: field 'documents' must be a list of strings, got {type(documents).__name__}.")
    if not documents:
        raise DataError(f"{where}: field 'documents' is an empty list; give at least one retrieved document.")
    for j, doc in enumerate(documents, start=1):
        if not isinstance(doc, str):
            raise DataError(f"{where}: documents[{j}] (1-based) must be a string, got {type(doc).__name__}.")
        if not doc.strip():
            raise DataError(f"{where}: documents[{j}] (1-based) is empty; drop it or give its text.")
    _validate_answer(row, where, require_answer)
    scores = row.get("reranking_scores")
    if scores is not None:
        if not isinstance(scores, (list, tuple)):
            raise DataError(f"{where}: field 'reranking_scores' must be a list of numbers, got {type(scores).__name__}.")
        if len(scores) != len(documents):
            raise DataError(f"{where}: 'reranking_scores' has {len(scores)} values but 'documents' has "
                            f"{len(documents)}; give one score per document.")
        for j, s in enumerate(scores, start=1):
            if isinstance(s, bool) or not isinstance(s, (int, float)):
                raise DataError(f"{where}: reranking_scores[{j}] (1-based) must be a number, got {s!r}.")
            if not math.isfinite(s):
                raise DataError(f"{where}: reranking_scores[{j}] (1-based) is {s}; scores must be finite numbers.")
    out = dict(row)
    out["documents"] = list(documents)
    return out


def _validate_answer(row: dict, where: str, require_answer: bool) -> None:
    answer, answers = row.get("answer"), row.get("answers")
    if answer is not None and not isinstance(answer, str):
        raise DataError(f"{where}: field 'answer' must be a string, got {type(answer).__name__}.")
    if answers is not None:
        if not isinstance(answers, (list, tuple)) or not all(isinstance(a, str) for a in answers):
            raise DataError(f"{where}: field 'answers' must be a list of strings.")
    if require_answer and answer is None and not answers:
        raise DataError(f"{where}: missing field 'answer' (the teacher's answer to train on); {ROW_HELP}.")


def validate_rows(located: Iterable[tuple[str, Any]], require_answer: bool = True,
                  source: Optional[str] = None) -> list[dict]:
    rows = [validate_row(row, where, require_answer) for where, row in located]
    if not rows:
        raise DataError(f"{source or 'the data'} has no rows; it needs at least one ({ROW_HELP}).")
    return rows
