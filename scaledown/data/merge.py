# Merge the workers' row files into the training file in query order, validating every row before the rename.
from __future__ import annotations

import heapq
import json
import os
from typing import Any, Iterator

from tqdm import tqdm

from scaledown.atomic_files import atomic_open
from scaledown.data.manifest import read_progress, shard_name
from scaledown.data.validation import validate_row
from scaledown.errors import DataError
from scaledown.progress import show_progress

INDEX_KEY = "_index"   # a row's query position; shard files carry it, the training file does not


def _shard_rows(work_dir: str, rank: int, world: int) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(query index, where, row) of one shard, up to the bytes its progress file vouches for."""
    name = shard_name(rank, world)
    progress = read_progress(work_dir, rank, world)
    if not progress.get("complete"):
        raise DataError(f"shard {name} in {work_dir} is not complete ({progress['blocks_done']} blocks done); "
                        f"rerun the same command to finish it before merging.")
    path = os.path.join(work_dir, name + ".jsonl")
    if progress["bytes"] == 0:
        return
    consumed = 0
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            consumed += len(line)
            if consumed > progress["bytes"]:   # bytes of an unfinished block (cannot happen once complete)
                break
            row = json.loads(line)
            yield row.pop(INDEX_KEY), f"{path} line {number}", row


def merge_shards(work_dir: str, world: int, output_file: str, progress: bool = True) -> int:
    """Write `output_file` (.json list or .jsonl) atomically; return the number of rows."""

    total = sum(read_progress(work_dir, rank, world)["rows"] for rank in range(world))
    if total == 0:
        raise DataError(f"no rows to write: every query was skipped (counts in the progress files of {work_dir}). "
                        f"Check the corpus and queries, or the teacher's answers.")
    merged = heapq.merge(*(_shard_rows(work_dir, rank, world) for rank in range(world)), key=lambda item: item[0])
    as_list = not output_file.endswith(".jsonl")
    os.makedirs(os.path.dirname(os.path.abspath(output_file)), exist_ok=True)
    count, last = 0, -1
    with atomic_open(output_file, "w", encoding="utf-8") as out:
        out.write("[\n" if as_list else "")
        for index, where, row in tqdm(merged, total=total, desc="merging shards", unit=" rows",
                                      disable=not show_progress(progress), mininterval=2):
            if index <= last:
                raise DataError(f"{where}: query {index} appears twice in the shards; the work folder "
                                f"{work_dir} is inconsistent. Delete it and rerun.")
            last = index
            row = validate_row(row, where, require_answer=True)  # the same check as ScaleDownDataset
            text = json.dumps(row, ensure_ascii=False)
            out.write((",\n" if count and as_list else "") + text + ("" if as_list else "\n"))
            count += 1
        out.write("\n]\n" if as_list else "")
    return count
