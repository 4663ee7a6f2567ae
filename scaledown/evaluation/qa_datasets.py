# QA datasets people report on (KILT NQ, TriviaQA, HotpotQA; PopQA; ASQA): read them and turn them into eval rows.
"""Each benchmark is read from a local copy (a file, or a folder holding `<name>*.jsonl`) or, with
network access, through `datasets` from the hub. Records in any of these formats become ScaleDown
rows `{"id", "query", "answers", "provenance"}`; documents are added by retrieval (`attach_documents`):

  KILT   {"id", "input", "output": [{"answer", "provenance": [{"wikipedia_id"}]}]}
  PopQA  {"question", "possible_answers": ["..."] or a JSON string}
  ASQA   {"ambiguous_question", "qa_pairs": [{"short_answers": ["..."]}]}
  plain  {"question" or "query", "answers" or "answer"}      (rows with "documents" are used as they are)
"""
from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from tqdm.auto import tqdm

from scaledown.data.validation import read_rows
from scaledown.errors import DataError
from scaledown.evaluation.metrics import gold_answers, match
from scaledown.progress import show_progress


@dataclass(frozen=True)
class Benchmark:
    name: str                     # command-line name
    title: str                    # column title in OSCAR's Table 1
    hub: str                      # datasets hub id
    hub_config: Optional[str]
    split: str                    # the evaluation split OSCAR/BERGEN report


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("asqa", "ASQA", "din0s/asqa", None, "dev"),
    Benchmark("hotpotqa", "HotpotQA", "facebook/kilt_tasks", "hotpotqa", "validation"),
    Benchmark("nq", "NQ", "facebook/kilt_tasks", "nq", "validation"),
    Benchmark("triviaqa", "TriviaQA", "facebook/kilt_tasks", "triviaqa_support_only", "validation"),
    Benchmark("popqa", "PopQA", "akariasai/PopQA", None, "test"),
)}


def parse_benchmarks(text: str) -> list[Benchmark]:
    names = list(BENCHMARKS) if text.strip() == "all" else [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        raise DataError(f"--benchmark {text!r}: unknown {unknown or 'empty list'}; use a comma-separated list of "
                        f"{', '.join(BENCHMARKS)} or 'all'.")
    return [BENCHMARKS[n] for n in names]


# ---- reading ---------------------------------------------------------------------------------------
def local_file(benchmark: Benchmark, data_dir: str) -> Optional[str]:
    """The local copy of a benchmark in a folder: <name>.jsonl, <name>-dev-kilt.jsonl, <name>*.json(l)."""
    for pattern in (f"{benchmark.name}.jsonl", f"{benchmark.name}.json", f"{benchmark.name}-*.jsonl",
                    f"{benchmark.name}_*.jsonl", f"{benchmark.name}*.json*"):
        found = sorted(glob.glob(os.path.join(data_dir, pattern)))
        if found:
            return found[0]
    return None


def load_records(benchmark: Benchmark, data_dir: Optional[str] = None,
                 split: Optional[str] = None) -> tuple[str, list[tuple[str, Any]]]:
    """(source, [(where, record)]) from a local copy in `data_dir`, else from the hub through `datasets`."""
    if data_dir:
        path = local_file(benchmark, data_dir)
        if path is None:
            raise DataError(f"no local copy of {benchmark.name} in {data_dir}: expected {benchmark.name}.jsonl or "
                            f"{benchmark.name}-dev-kilt.jsonl (KILT format). Put the file there, or drop --data_dir "
                            f"to read {benchmark.hub} through `datasets` (needs network access).")
        return path, read_rows(path)
    try:
        import datasets
        data = datasets.load_dataset(benchmark.hub, benchmark.hub_config, split=split or benchmark.split)
    except Exception as exc:  # offline, renamed dataset...: say how to use a local copy instead
        raise DataError(f"could not load {benchmark.hub} ({benchmark.hub_config or 'default'}) through datasets: "
                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}. Without network access, "
                        f"download the file elsewhere and pass --data_dir DIR (or --data FILE).") from None
    records = [dict(r) for r in data]
    if benchmark.name == "triviaqa" and records and not records[0].get("input"):
        records = _triviaqa_questions(records, split or benchmark.split)
    source = f"{benchmark.hub}:{benchmark.hub_config or ''}:{split or benchmark.split}"
    return source, [(f"{source} row {i}", r) for i, r in enumerate(records, start=1)]


def _triviaqa_questions(records: list[dict], split: str) -> list[dict]:
    """KILT-TriviaQA ships ids only; the questions come from trivia_qa (unfiltered.nocontext), as in KILT."""
    import datasets
    trivia = datasets.load_dataset("trivia_qa", "unfiltered.nocontext", split=split)
    questions = dict(zip(trivia["question_id"], trivia["question"]))
    return [dict(r, input=questions[r["id"]]) for r in records if r["id"] in questions]


def to_row(record: Any, where: str) -> dict:
    """One benchmark record -> {"id", "query", "answers", "provenance"[, "documents"...]}."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object, got {type(record).__name__}.")
    if "query" in record and "documents" in record:   # already a ScaleDown row
        return dict(record)
    row: dict[str, Any] = {"id": str(record.get("id", record.get("sample_id", where)))}
    if "input" in record and "output" in record:     # KILT
        outputs = record["output"] or []
        row["query"] = record["input"]
        row["answers"] = [o["answer"] for o in outputs if isinstance(o, dict) and o.get("answer")]
        row["provenance"] = sorted({str(p["wikipedia_id"]) for o in outputs if isinstance(o, dict)
                                    for p in (o.get("provenance") or []) if p.get("wikipedia_id") is not None})
    elif "ambiguous_question" in record:              # ASQA: every short answer of every interpretation
        row["query"] = record["ambiguous_question"]
        row["answers"] = [a for qa in record.get("qa_pairs") or [] for a in qa.get("short_answers") or [] if a]
    elif "possible_answers" in record:                # PopQA
        answers = record["possible_answers"]
        row["query"] = record.get("question")
        row["answers"] = json.loads(answers) if isinstance(answers, str) else list(answers or [])
    elif "question" in record or "query" in record:
        row["query"] = record.get("question", record.get("query"))
        row["answers"] = gold_answers(record)
    else:
        raise DataError(f"{where}: unknown record format (keys {sorted(record)[:6]}); expected a ScaleDown row "
                        f"(query, documents, answers), KILT (input, output), PopQA (question, possible_answers) "
                        f"or ASQA (ambiguous_question, qa_pairs).")
    if not isinstance(row["query"], str) or not row["query"].strip():
        raise DataError(f"{where}: the question is missing or empty.")
    if not row["answers"]:
        raise DataError(f"{where}: no gold answer; evaluation needs at least one (KILT 'output[].answer', "
                        f"'answers' or 'answer').")
    return row


def to_rows(located: Sequence[tuple[str, Any]], max_examples: Optional[int] = None) -> list[dict]:
    located = list(located)[:max_examples] if max_examples else list(located)
    return [to_row(record, where) for where, record in located]


# ---- documents -------------------------------------------------------------------------------------
def attach_documents(rows: list[dict], retriever, k: int, progress: bool = False) -> list[dict]:
    """Add the top-k retrieved passages as `documents` and their `relevance` labels (for nDCG/MRR).

    A passage is relevant when it comes from a gold provenance page; for rows without provenance, when it
    contains a gold answer (DPR's has-answer).
    """
    todo = [i for i, r in enumerate(rows) if not r.get("documents")]
    chunk = 256
    starts = range(0, len(todo), chunk)
    if show_progress(progress):
        starts = tqdm(starts, desc="retrieving", unit="batch")
    for start in starts:
        ids = todo[start:start + chunk]
        for i, passages in zip(ids, retriever.retrieve([rows[i]["query"] for i in ids], k)):
            row = rows[i]
            gold_pages = set(row.get("provenance") or [])
            row["documents"] = [p.as_document() for p in passages]
            row["relevance"] = [float(p.page_id in gold_pages) if gold_pages and p.page_id is not None
                                else match(p.text, gold_answers(row)) for p in passages]
    return rows
