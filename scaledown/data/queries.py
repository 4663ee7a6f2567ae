# Query sources of the data pipeline: a user's queries file, MS MARCO (through `datasets`), synthetic questions.
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional

from scaledown.data.bad_rows import BadRows
from scaledown.data.records import check_input_file, iter_records
from scaledown.data.synthetic import generate_examples
from scaledown.errors import DataError
from scaledown.text_files import iter_lines

MS_MARCO_HUB = ("microsoft/ms_marco", "v2.1")
OSCAR_MS_MARCO_QUERIES = 500_000   # OSCAR §4.1: PISCO's questions + 500k MS MARCO queries
_SAVED_MARKERS = ("dataset_info.json", "dataset_dict.json", "state.json")  # written by save_to_disk


@dataclass(frozen=True)
class Query:
    text: str
    source: str                 # "queries", "ms_marco" or "synthetic"
    id: Optional[str] = None    # the source's own id, kept for provenance


def check_query(where: str, record: dict, field: str, bad: BadRows) -> Optional[str]:
    """The query text of a record, or None (reported to `bad`) when missing or empty."""
    text = record.get(field)
    if text is None:
        bad.report(where, "queries without text", f"missing field '{field}' (the question text)")
        return None
    if not isinstance(text, str):
        bad.report(where, "queries without text", f"field '{field}' must be a string, got {type(text).__name__}")
        return None
    if not text.strip():
        bad.report(where, "queries without text", f"field '{field}' is empty; give the question text")
        return None
    return " ".join(text.split())


def _record_id(record: dict) -> Optional[str]:
    for key in ("id", "_id", "query_id", "qid"):
        if record.get(key) is not None:
            return str(record[key])
    return None


def queries_from_file(path: str, bad: BadRows, flag: str = "--queries") -> Iterator[Query]:
    """A user's queries: JSONL (or JSON list / parquet) rows with a `query` field."""
    check_input_file(path, flag, "queries file")
    for where, record in iter_records(path, bad):
        text = check_query(where, record, "query", bad)
        if text is not None:
            yield Query(text, "queries", _record_id(record))


def queries_from_ms_marco(path: Optional[str], limit: int, bad: BadRows, split: str = "train") -> Iterator[Query]:
    """The first `limit` MS MARCO queries: the hub dataset, or a local copy when offline."""
    rows = _ms_marco_rows(path, split)
    kept = 0
    for number, record in enumerate(rows, start=1):
        if kept >= limit:
            break
        text = check_query(f"MS MARCO ({path or MS_MARCO_HUB[0]}) row {number}", record, "query", bad)
        if text is not None:
            kept += 1
            yield Query(text, "ms_marco", _record_id(record))


def _ms_marco_rows(path: Optional[str], split: str) -> Iterable[dict[str, Any]]:
    if path is not None and path.endswith(".tsv"):  # the original queries.train.tsv: id<TAB>query
        return _tsv_rows(path)
    import datasets
    try:
        if path is None:
            return datasets.load_dataset(*MS_MARCO_HUB, split=split, streaming=True)
        if not os.path.exists(path):
            raise DataError(f"--ms_marco_path {path} does not exist. Give a saved dataset folder "
                            f"(Dataset.save_to_disk), a folder or file of the hub repo's parquet/JSON data, "
                            f"or queries.train.tsv.")
        if os.path.isdir(path) and any(os.path.exists(os.path.join(path, name)) for name in _SAVED_MARKERS):
            data = datasets.load_from_disk(path)
            return data[split] if isinstance(data, datasets.DatasetDict) else data
        if os.path.isfile(path):
            kind = "parquet" if path.endswith(".parquet") else "json"
            return datasets.load_dataset(kind, data_files=path, split="train")
        return datasets.load_dataset(path, split=split)
    except DataError:
        raise
    except Exception as exc:  # offline hub errors, missing splits, unreadable files
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        where = f"--ms_marco_path {path}" if path else f"the hub dataset {MS_MARCO_HUB[0]}"
        raise DataError(f"could not load MS MARCO from {where} ({first}). Offline, download it elsewhere and "
                        f"pass --ms_marco_path (a saved dataset folder, its parquet files, or queries.train.tsv).") \
            from None


def _tsv_rows(path: str) -> Iterator[dict[str, Any]]:
    for _, line in iter_lines(path):
        if not line.strip():
            continue
        qid, _, text = line.partition("\t")
        yield {"query_id": qid, "query": text} if text else {"query": qid}


def synthetic_queries(count: int, seed: int) -> Iterator[Query]:
    """Questions of the built-in synthetic task (their own documents are not used: the corpus is searched)."""
    for number, row in enumerate(generate_examples(count, seed=seed)):
        yield Query(row["query"], "synthetic", f"synthetic-{seed}-{number}")


def collect_queries(queries_file: Optional[str], ms_marco: bool, ms_marco_path: Optional[str], ms_marco_limit: int,
                    num_synthetic: int, seed: int, bad: BadRows) -> list[Query]:
    """All queries in a fixed order (file, MS MARCO, synthetic): the order of the final training file."""
    out: list[Query] = []
    if queries_file:
        out += queries_from_file(queries_file, bad)
    if ms_marco:
        out += queries_from_ms_marco(ms_marco_path, ms_marco_limit, bad)
    if num_synthetic:
        out += synthetic_queries(num_synthetic, seed)
    if not out:
        raise DataError("no queries: every query row was bad and skipped; see the counts above." if bad.total else
                        "no queries to answer: pass --queries FILE, --download_ms_marco or --num_synthetic_queries N.")
    return out
