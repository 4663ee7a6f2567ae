# Stream records (dicts) with their location ('file line N') from JSONL, JSON-list or parquet input files.
"""Used for corpora and query files, which can be far larger than memory: JSONL and parquet are
read incrementally. Malformed lines go to a BadRows policy (error naming file and line, or skip).
"""
from __future__ import annotations

import os
from typing import Iterator

from scaledown.data.bad_rows import BadRows
from scaledown.errors import DataError, require
from scaledown.text_files import first_char, iter_json_lines, load_json

FORMATS = (".jsonl", ".json", ".parquet")


def check_input_file(path: str, flag: str, what: str) -> None:
    """Fail early, naming the flag, when an input file is missing or of an unknown format."""
    if not os.path.exists(path):
        raise DataError(f"{flag} {path}: the {what} does not exist. Check the path.")
    if os.path.isdir(path):
        raise DataError(f"{flag} {path} is a folder; pass the {what} as one .jsonl, .json or .parquet file.")
    if not path.endswith(FORMATS) and not path.endswith(".jsonl.gz"):
        raise DataError(f"{flag} {path}: unknown format; the {what} must be a .jsonl (one JSON object a line), "
                        f".json (a list of objects) or .parquet file.")


def iter_records(path: str, bad: BadRows) -> Iterator[tuple[str, dict]]:
    """(where, record) pairs; non-object or malformed rows are reported to `bad`."""
    if path.endswith(".parquet"):
        yield from _iter_parquet(path)
    elif path.endswith(".json") and first_char(path) == "[":
        yield from _iter_json_list(path, bad)
    else:   # .jsonl, and .json files holding JSON lines (KILT's kilt_knowledgesource.json is one)
        yield from _iter_jsonl(path, bad)


def _iter_jsonl(path: str, bad: BadRows) -> Iterator[tuple[str, dict]]:
    for where, record in iter_json_lines(path, bad.report):
        if not isinstance(record, dict):
            bad.report(where, "lines that are not objects", f"expected a JSON object, got {type(record).__name__}")
            continue
        yield where, record


def _iter_json_list(path: str, bad: BadRows) -> Iterator[tuple[str, dict]]:
    data = load_json(path, DataError)
    if not isinstance(data, list):
        raise DataError(f"{path} holds a JSON {type(data).__name__}; it must be a list of objects (or use .jsonl).")
    for number, record in enumerate(data, start=1):
        where = f"{path} row {number}"
        if not isinstance(record, dict):
            bad.report(where, "rows that are not objects", f"expected a JSON object, got {type(record).__name__}")
            continue
        yield where, record


def _iter_parquet(path: str) -> Iterator[tuple[str, dict]]:
    pq = require("pyarrow.parquet", "data", f"Reading the parquet file {path}")
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise DataError(f"{path} is not a readable parquet file ({exc}).") from None
    number = 0
    for batch in parquet.iter_batches(batch_size=4096):
        for record in batch.to_pylist():
            number += 1
            yield f"{path} row {number}", record
