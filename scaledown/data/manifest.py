# The run's work folder beside the output: manifest (settings, queries), per-shard progress and row files.
"""Layout of `train.json` -> `train.prep/`:

    manifest.json                      settings the run was started with, query count, block size
    queries.jsonl                      the queries in output order (written once, before the manifest)
    shard-00001-of-00004.jsonl         rows written by worker 1 (blocks 1, 5, 9, ... in order)
    shard-00001-of-00004.progress.json how many of its blocks are done and how many bytes they fill
    index/                             passages and retrieval index (unless --index_dir)

The unit of work is a block of `block_size` consecutive queries; block b belongs to worker
b % world. A worker appends a block's rows, fsyncs, then rewrites its progress file atomically;
on restart it truncates its row file to the recorded length (dropping a half-written block) and
continues with its next block, so a killed run neither redoes nor duplicates rows.
"""
from __future__ import annotations

import glob
import json
import os
import socket
from collections import Counter
from typing import Any, Optional

from scaledown.atomic_files import atomic_open
from scaledown.data.files import read_json, write_json_atomic
from scaledown.errors import DataError
from scaledown.text_files import iter_lines

MANIFEST = "manifest.json"
QUERIES = "queries.jsonl"


def work_dir_for(output_file: str) -> str:
    root, ext = os.path.splitext(os.path.abspath(output_file))
    return root + ".prep"


def shard_name(rank: int, world: int) -> str:
    return f"shard-{rank:05d}-of-{world:05d}"


def num_blocks(num_queries: int, block_size: int) -> int:
    return (num_queries + block_size - 1) // block_size


def blocks_of(rank: int, world: int, total_blocks: int) -> list[int]:
    return list(range(rank, total_blocks, world))


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def read_progress(work_dir: str, rank: int, world: int) -> dict[str, Any]:
    path = os.path.join(work_dir, shard_name(rank, world) + ".progress.json")
    return read_json(path) or {"blocks_done": 0, "rows": 0, "bytes": 0, "skipped": {}, "complete": False}


def all_progress(work_dir: str, world: int) -> list[dict[str, Any]]:
    return [read_progress(work_dir, rank, world) for rank in range(world)]


def clear_shards(work_dir: str) -> None:
    for path in glob.glob(os.path.join(work_dir, "shard-*")):
        os.remove(path)


def has_rows(work_dir: str) -> bool:
    return any(os.path.getsize(p) > 0 for p in glob.glob(os.path.join(work_dir, "shard-*.jsonl")))


def accept_manifest(work_dir: str, requested: dict[str, Any], overwrite: bool) -> Optional[dict[str, Any]]:
    """The existing manifest when it was made with the same settings (resume), else None after making
    room for a new run. Finished rows of a run with other settings are never dropped silently."""
    existing = read_json(os.path.join(work_dir, MANIFEST))
    if existing is not None and existing.get("requested") == requested:
        return existing
    if has_rows(work_dir):
        if existing is not None and not overwrite:
            changed = ", ".join(differences(existing.get("requested", {}), requested))
            raise DataError(f"{work_dir} holds a run started with other settings (changed: {changed}). Rerun with "
                            f"the same flags to resume it, pass --overwrite to discard its rows, or choose another "
                            f"--output_file.")
        if existing is None and not overwrite:
            raise DataError(f"{work_dir} holds shard files but no {MANIFEST}; they cannot be matched to these "
                            f"settings. Delete the folder (or pass --overwrite) to start afresh.")
    clear_shards(work_dir)
    manifest_path = os.path.join(work_dir, MANIFEST)
    if os.path.exists(manifest_path):
        os.remove(manifest_path)
    return None


def write_queries(work_dir: str, queries) -> None:
    with atomic_open(os.path.join(work_dir, QUERIES), "w", encoding="utf-8") as f:
        for query in queries:
            f.write(json.dumps({"query": query.text, "source": query.source, "id": query.id}, ensure_ascii=False))
            f.write("\n")


def read_queries(work_dir: str) -> list[str]:
    return [json.loads(line)["query"] for _, line in iter_lines(os.path.join(work_dir, QUERIES)) if line.strip()]


class ShardWriter:
    """Appends one worker's finished blocks to its row file, recording progress after each."""

    def __init__(self, work_dir: str, rank: int, world: int):
        self.rows_path = os.path.join(work_dir, shard_name(rank, world) + ".jsonl")
        self.progress_path = os.path.join(work_dir, shard_name(rank, world) + ".progress.json")
        self.progress = read_progress(work_dir, rank, world)
        self.progress.update(rank=rank, world=world, pid=os.getpid(), host=socket.gethostname())
        size = os.path.getsize(self.rows_path) if os.path.exists(self.rows_path) else 0
        if size < self.progress["bytes"]:
            raise DataError(f"{self.rows_path} is shorter ({size} bytes) than its progress file records "
                            f"({self.progress['bytes']}); it was changed outside the pipeline. Delete the "
                            f"work folder {work_dir} to start afresh.")
        self.file = open(self.rows_path, "ab" if size else "wb")
        if size > self.progress["bytes"]:   # the half-written block of a killed run
            self.file.truncate(self.progress["bytes"])
        self.file.seek(self.progress["bytes"])
        write_json_atomic(self.progress_path, self.progress)   # records this process's pid

    @property
    def blocks_done(self) -> int:
        return self.progress["blocks_done"]

    def append_block(self, rows: list[dict[str, Any]], skipped: Counter) -> None:
        data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
        self.file.write(data)
        self.file.flush()
        os.fsync(self.file.fileno())   # rows are on disk before the progress that counts them
        skipped_total = Counter(self.progress["skipped"])
        skipped_total.update(skipped)
        self.progress.update(blocks_done=self.progress["blocks_done"] + 1, rows=self.progress["rows"] + len(rows),
                             bytes=self.progress["bytes"] + len(data), skipped=dict(skipped_total))
        write_json_atomic(self.progress_path, self.progress)

    def finish(self, seconds: float, answer_window: Optional[list[float]] = None) -> None:
        """Mark the shard complete; `answer_window` = [start, end] of this run's answering (for rows/s)."""
        self.progress.update(complete=True, seconds=round(seconds, 3), answer_window=answer_window)
        write_json_atomic(self.progress_path, self.progress)
        self.file.close()
