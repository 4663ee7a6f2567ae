# Pretraining rows: plain text chunked to doc_max_length, each an auto-encoding or a continuation example.
"""Text comes through the data pipeline's corpus readers and chunker (`corpus.py`, `chunking.py`):
a .jsonl / .json / .parquet corpus file (KILT lines, {"text"} or {"contents"} rows) is chunked once
into a memory-mapped passage store (`passage_store.py`, reused by later runs and shared by ranks);
a `datasets.Dataset`, a folder saved with `Dataset.save_to_disk` or a list of strings / dicts is
chunked in memory; with no source the built-in synthetic documents (`synthetic.py`) serve.

Row i is {"documents": [chunk i], "task", "answer"}: "autoencode" rows target chunk i itself,
"continuation" rows target chunk i+1 of the same document. Tasks are drawn once, seeded, so that
exactly round(ratio x rows) rows auto-encode (resumes and ranks see the same rows); only chunks
followed by another chunk of their document can be continuations. Held-out rows are always
auto-encoding: their token accuracy is the reconstruction accuracy.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Optional, Sequence

import numpy as np

from scaledown.config import ScaleDownConfig
from scaledown.data.bad_rows import BadRows
from scaledown.data.chunking import check_tokenizer, chunk_documents
from scaledown.data.corpus import CorpusDocument, corpus_documents
from scaledown.data.files import wait_until
from scaledown.data.passage_store import PassageStore
from scaledown.data.records import check_input_file
from scaledown.data.synthetic import SyntheticSpec, generate_examples
from scaledown.errors import DataError

logger = logging.getLogger(__name__)

HELD_OUT_EVERY = 50      # without a separate eval file, every 50th document of the corpus is held out ...
HELD_OUT_MAX = 512       # ... up to this many chunks (the rest of the corpus trains)
SYNTHETIC_EVAL_ARTICLES = 64


class PretrainingDataset:
    """Chunks (a pyarrow table with `doc_id` and `document` columns) served as pretraining rows."""

    def __init__(self, table, autoencoding_ratio: float = 0.5, seed: int = 0, held_out: bool = False):
        self.table = table
        self.documents = table.column("document")
        doc_ids = np.asarray(table.column("doc_id").to_numpy(zero_copy_only=False))
        # a chunk can be continued when the next chunk belongs to the same document
        self.has_next = np.zeros(len(doc_ids), dtype=bool)
        if len(doc_ids) > 1:
            self.has_next[:-1] = doc_ids[1:] == doc_ids[:-1]
        self.autoencode = assign_tasks(self.has_next, 1.0 if held_out else autoencoding_ratio, seed)

    def __len__(self) -> int:
        return len(self.autoencode)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        text = self.documents[index].as_py()
        if self.autoencode[index]:
            return {"documents": [text], "task": "autoencode", "answer": text}
        return {"documents": [text], "task": "continuation", "answer": self.documents[index + 1].as_py()}

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    @property
    def autoencoding_share(self) -> float:
        return float(self.autoencode.mean()) if len(self) else 0.0


def assign_tasks(has_next: np.ndarray, ratio: float, seed: int) -> np.ndarray:
    """True = auto-encoding. Exactly round((1 - ratio) x n) continuations where enough chunks allow one."""
    n = len(has_next)
    autoencode = np.ones(n, dtype=bool)
    candidates = np.flatnonzero(has_next)
    wanted = int(round((1.0 - ratio) * n))
    chosen = np.random.default_rng(seed).permutation(candidates)[:wanted]
    autoencode[chosen] = False
    if wanted > len(candidates):
        logger.warning("only %d of %d pretraining chunks are followed by more text of their document, so %.0f%% of "
                       "examples are continuations instead of %.0f%% (pretrain_autoencoding_ratio=%s). Use longer "
                       "documents for more continuation examples.", len(candidates), n,
                       100 * len(candidates) / max(1, n), 100 * (1 - ratio), ratio)
    return autoencode


# ---- sources -> chunk tables -------------------------------------------------------------------
def chunk_table(documents, tokenizer, chunk_tokens: int):
    """Chunk documents in memory into a table (doc_id, document), in document order."""
    import pyarrow as pa
    doc_ids, texts = [], []
    for passage in chunk_documents(documents, tokenizer, chunk_tokens):
        doc_ids.append(passage.doc_id)
        texts.append(passage.document)
    if not texts:
        raise DataError("the pretraining text gave no chunks (every document was empty).")
    return pa.table({"doc_id": pa.array(doc_ids, pa.string()), "document": pa.array(texts, pa.string())})


def records_of(source: Any, name: str) -> list[tuple[str, dict]]:
    """(where, record) pairs of an in-memory source: a datasets.Dataset or a list of strings / dicts."""
    if hasattr(source, "column_names") and hasattr(source, "__getitem__"):
        return [(f"{name} row {i + 1}", source[i]) for i in range(len(source))]
    if isinstance(source, (list, tuple)):
        return [(f"{name} row {i + 1}", {"text": r} if isinstance(r, str) else r) for i, r in enumerate(source)]
    raise DataError(f"{name}: cannot read a {type(source).__name__} as pretraining text; pass a .jsonl/.json/.parquet "
                    f"corpus file, a folder saved with datasets' save_to_disk, a datasets.Dataset or a list of strings.")


def load_saved_dataset(path: str, flag: str):
    """A `datasets` folder (save_to_disk); a DatasetDict gives its 'train' split."""
    import datasets
    try:
        data = datasets.load_from_disk(path)
    except Exception as exc:  # datasets raises FileNotFoundError or its own errors for foreign folders
        raise DataError(f"{flag} {path} is a folder but not one saved by datasets' save_to_disk ({exc}). Pass a "
                        f".jsonl/.json/.parquet corpus file or such a folder.") from None
    if isinstance(data, datasets.DatasetDict):
        if "train" not in data:
            raise DataError(f"{flag} {path} holds splits {list(data)}; save the split to use (e.g. data['train']).")
        data = data["train"]
    return data


def source_table(source: Any, tokenizer, tokenizer_name: str, chunk_tokens: int, store_dir: str,
                 flag: str, is_main: bool = True, skip_bad_rows: bool = False):
    """The chunk table of a file (through a passage store in store_dir), a saved dataset or in-memory rows."""
    check_tokenizer(tokenizer, tokenizer_name)
    bad = BadRows(skip=skip_bad_rows)
    if isinstance(source, str) and os.path.isdir(source):
        source = load_saved_dataset(source, flag)
    if not isinstance(source, str):
        documents = corpus_documents(records_of(source, flag), bad)
        return chunk_table(documents, tokenizer, chunk_tokens)
    check_input_file(source, flag, "pretraining text")
    wanted = PassageStore.wanted_meta(source, chunk_tokens, tokenizer_name)
    if is_main:
        PassageStore.build(store_dir, source, tokenizer, tokenizer_name, chunk_tokens, bad)
    else:  # one rank chunks, the others memory-map its store
        wait_until(lambda: int(PassageStore.is_built(store_dir, wanted)), 1, f"the chunked corpus in {store_dir}")
    return PassageStore(store_dir).table


def split_held_out(table):
    """(train, held-out) chunks: every HELD_OUT_EVERY-th document, at most HELD_OUT_MAX chunks, is held out."""
    doc_ids = np.asarray(table.column("doc_id").to_numpy(zero_copy_only=False))
    starts = np.ones(len(doc_ids), dtype=bool)
    starts[1:] = doc_ids[1:] != doc_ids[:-1]
    ordinal = np.cumsum(starts) - 1
    held = ordinal % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
    held &= np.cumsum(held) <= HELD_OUT_MAX
    return table.filter(~held), table.filter(held)


def synthetic_texts(count: int, seed: int) -> list[str]:
    """Built-in plain text: each text joins the documents of one synthetic example (6 invented entities,
    3 facts each, ~115 tiny-tokenizer tokens), so it spans several chunks and continuations exist."""
    spec = SyntheticSpec(num_documents=6)
    return [" ".join(row["documents"]) for row in generate_examples(count, seed=seed, spec=spec)]


def load_pretraining_data(config: ScaleDownConfig, tokenizer, tokenizer_name: str, source: Any = None,
                          eval_source: Any = None, is_main: bool = True, skip_bad_rows: bool = False,
                          num_rows: Optional[int] = None) -> tuple[PretrainingDataset, PretrainingDataset]:
    """(train, held-out) pretraining datasets chunked with `tokenizer` (the compressor's) to doc_max_length.

    source / eval_source: a corpus file, a saved `datasets` folder, a datasets.Dataset or a list of texts.
    No source: synthetic text, `num_rows` chunks at least (default: batch_size x steps).
    """
    chunk = config.doc_max_length
    store = os.path.join(config.output_dir, "pretraining_passages")
    if source is None:
        steps = config.max_steps if config.max_steps > 0 else 1000  # every phase, warm-up included
        wanted = num_rows or config.batch_size * steps
        articles = -(-wanted // 3)  # a synthetic text gives 3-4 chunks of 32 tiny tokens
        train = chunk_table(_plain(synthetic_texts(articles, config.seed)), tokenizer, chunk)
        held = chunk_table(_plain(synthetic_texts(SYNTHETIC_EVAL_ARTICLES, config.seed + 10_000)), tokenizer, chunk)
    else:
        train = source_table(source, tokenizer, tokenizer_name, chunk, os.path.join(store, "train"),
                             "--pretrain_data", is_main, skip_bad_rows)
        if eval_source is not None:
            held = source_table(eval_source, tokenizer, tokenizer_name, chunk, os.path.join(store, "eval"),
                                "--pretrain_eval_data", is_main, skip_bad_rows)
        else:
            train, held = split_held_out(train)
    if train.num_rows == 0:
        raise DataError("no pretraining chunks are left for training; give more text with --pretrain_data.")
    return (PretrainingDataset(train, config.pretrain_autoencoding_ratio, config.seed),
            PretrainingDataset(held, held_out=True))


def _plain(texts: Sequence[str]):
    return (CorpusDocument(f"synthetic text {i + 1}", str(i), "", t) for i, t in enumerate(texts))


