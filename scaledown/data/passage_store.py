# The chunked corpus on disk: an Arrow file every worker memory-maps (shared pages, no copy per process).
"""`PassageStore.build(...)` chunks a corpus once into `DIR/passages.arrow` (columns doc_id, chunk,
title, document) and writes `DIR/passages.json` last, so a store is complete once its meta exists.
The meta records what it was built from; `build` reuses a store whose meta matches.
"""
from __future__ import annotations

import os
from typing import Any, Iterator, Optional, Sequence

from tqdm import tqdm

from scaledown.atomic_files import atomic_path
from scaledown.data.bad_rows import BadRows
from scaledown.data.chunking import check_tokenizer, chunk_documents
from scaledown.data.corpus import iter_corpus
from scaledown.data.files import file_identity, read_json, write_json_atomic
from scaledown.errors import DataError
from scaledown.progress import show_progress

DATA_FILE = "passages.arrow"
META_FILE = "passages.json"
_WRITE_BATCH = 8192


class PassageStore:
    """Random access to passages by index (the index every retriever returns)."""

    def __init__(self, directory: str):
        import pyarrow as pa
        self.directory = directory
        self.meta = read_json(os.path.join(directory, META_FILE))
        if self.meta is None:
            raise DataError(f"{directory} holds no complete passage store ({META_FILE} is missing); "
                            f"build it with PassageStore.build or rerun the pipeline.")
        self.table = pa.ipc.open_file(pa.memory_map(os.path.join(directory, DATA_FILE))).read_all()

    def __len__(self) -> int:
        return self.table.num_rows

    def documents(self, indices: Sequence[int]) -> list[str]:
        import pyarrow as pa
        return self.table.column("document").take(pa.array(list(indices), type=pa.int64())).to_pylist()

    def iter_documents(self, start: int = 0, stop: Optional[int] = None, batch: int = 4096) -> Iterator[list[str]]:
        stop = len(self) if stop is None else min(stop, len(self))
        for offset in range(start, stop, batch):
            yield self.table.column("document").slice(offset, min(batch, stop - offset)).to_pylist()

    def all_documents(self) -> list[str]:
        return self.table.column("document").to_pylist()

    def passage(self, index: int) -> dict[str, Any]:
        return {name: self.table.column(name)[index].as_py() for name in self.table.column_names}

    # ---- building ------------------------------------------------------------------------------
    @staticmethod
    def wanted_meta(corpus_path: str, chunk_tokens: int, tokenizer_name: str) -> dict[str, Any]:
        return {"corpus": file_identity(corpus_path), "chunk_tokens": chunk_tokens, "tokenizer": tokenizer_name}

    @classmethod
    def is_built(cls, directory: str, wanted: dict[str, Any]) -> bool:
        meta = read_json(os.path.join(directory, META_FILE))
        return meta is not None and all(meta.get(k) == v for k, v in wanted.items())

    @classmethod
    def build(cls, directory: str, corpus_path: str, tokenizer, tokenizer_name: str, chunk_tokens: int,
              bad: BadRows, progress: bool = True) -> "PassageStore":
        """Chunk `corpus_path` into `directory` unless a store built from the same inputs is there."""
        import pyarrow as pa

        wanted = cls.wanted_meta(corpus_path, chunk_tokens, tokenizer_name)
        if cls.is_built(directory, wanted):
            return cls(directory)
        check_tokenizer(tokenizer, tokenizer_name)
        os.makedirs(directory, exist_ok=True)
        meta_path = os.path.join(directory, META_FILE)
        if os.path.exists(meta_path):
            os.remove(meta_path)  # stale store of other inputs: invisible until rebuilt
        schema = pa.schema([("doc_id", pa.string()), ("chunk", pa.int32()), ("title", pa.string()),
                            ("document", pa.string())])
        documents = _CountingDocuments(iter_corpus(corpus_path, bad))
        count = 0
        with atomic_path(os.path.join(directory, DATA_FILE)) as tmp:   # the store exists only once complete
            with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
                columns: dict[str, list] = {name: [] for name in schema.names}
                bar = tqdm(desc="chunking corpus", unit=" passages", disable=not show_progress(progress),
                           mininterval=2)
                for passage in chunk_documents(documents, tokenizer, chunk_tokens):
                    for name in schema.names:
                        columns[name].append(getattr(passage, name))
                    count += 1
                    if len(columns["document"]) == _WRITE_BATCH:
                        writer.write_batch(pa.record_batch([columns[n] for n in schema.names], schema=schema))
                        columns = {name: [] for name in schema.names}
                        bar.update(_WRITE_BATCH)
                if columns["document"]:
                    writer.write_batch(pa.record_batch([columns[n] for n in schema.names], schema=schema))
                bar.update(len(columns["document"]))
                bar.close()
            if count == 0:
                raise DataError(f"--corpus_path {corpus_path} gave no passages (every row was bad or empty).")
        write_json_atomic(meta_path, {**wanted, "num_passages": count, "num_documents": documents.count,
                                      "bad_rows": bad.to_dict()})
        return cls(directory)


class _CountingDocuments:
    """Passes documents through and counts them (for the meta)."""

    def __init__(self, documents):
        self.documents = documents
        self.count = 0

    def __iter__(self):
        for document in self.documents:
            self.count += 1
            yield document
