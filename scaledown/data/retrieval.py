# Retriever API (BM25, SPLADE) shared by the data pipeline and evaluation: build or reuse an index, then search.
"""
    from scaledown.data.retrieval import open_retriever
    retriever = open_retriever("bm25", "index/bm25", passages=["Paris is ...", ...])   # builds, or reuses
    retriever.search(["capital of France?"], k=5)   # -> [[Hit(index=0, score=7.1), ...]]
    open_retriever("splade", "index/splade", passages, model="naver/splade-v3")
    open_retriever("bm25", "index/bm25")             # load a built index

`passages` is a list of strings or a PassageStore; Hit.index is a position in it. An index lives in
one folder: `part-NNNNN/` sub-folders (each written to a temporary name, then renamed) and
`index.json`, written last, which records what it was built from; a folder built from other
passages or another model is rebuilt. Building is split into parts that several workers share
(rank r builds parts r, r+world, ...; the others wait for them), so a large SPLADE index is encoded
in parallel and a killed build resumes at part granularity. Hits are ordered by score, ties by
passage index, so results do not depend on how the index was split.
"""
from __future__ import annotations

import glob
import hashlib
import os
import shutil
from typing import Any, Optional

from scaledown.atomic_files import TMP_MARK, commit_directory, staging_directory
from scaledown.data.files import read_json, wait_until, write_json_atomic
from scaledown.data.retrieval_bm25 import BM25Retriever
from scaledown.data.retrieval_splade import SpladeRetriever
from scaledown.data.retriever_base import Hit, Retriever, documents_of, merge_hits  # noqa: F401 (the API)
from scaledown.errors import ConfigError, DataError

INDEX_META = "index.json"
PART_META = "part.json"


def retriever_class(kind: str):
    if kind == "bm25":
        return BM25Retriever
    if kind == "splade":
        return SpladeRetriever
    raise ConfigError(f"unknown retriever '{kind}'; use 'bm25' or 'splade' (or a SPLADE model name).")


def passages_fingerprint(passages) -> dict[str, Any]:
    """Identity of an indexed collection: a PassageStore's build meta, or a hash of a list of strings."""
    meta = getattr(passages, "meta", None)
    if meta is not None:
        return {k: v for k, v in meta.items() if k != "bad_rows"}
    digest = hashlib.sha256()
    for text in passages:
        digest.update(text.encode("utf-8"))
        digest.update(b"\x00")
    return {"num_passages": len(passages), "sha256": digest.hexdigest()}


def open_retriever(kind: str, directory: str, passages=None, model: Optional[str] = None, rank: int = 0,
                   world: int = 1, progress: bool = True, **options: Any) -> Retriever:
    """A ready retriever: builds the index in `directory` from `passages` (this rank's share) unless a
    complete one for the same passages and settings is there; with passages=None, loads it."""
    retriever = retriever_class(kind)(directory, model=model, **options)
    meta = read_json(os.path.join(directory, INDEX_META))
    if passages is None:
        if meta is None:
            raise DataError(f"{directory} holds no complete {kind} index ({INDEX_META} missing); "
                            f"build it by passing the passages.")
    else:
        wanted = {**retriever.settings(), "passages": passages_fingerprint(passages)}
        if meta is None or any(meta.get(key) != value for key, value in wanted.items()):
            meta = _build(retriever, passages, wanted, rank, world, progress)
    retriever.load(meta["parts"])
    return retriever


def _build(retriever: Retriever, passages, wanted: dict[str, Any], rank: int, world: int,
           progress: bool) -> dict[str, Any]:
    directory = retriever.directory
    os.makedirs(directory, exist_ok=True)
    meta_path = os.path.join(directory, INDEX_META)
    if rank == 0 and os.path.exists(meta_path):
        os.remove(meta_path)  # an index of other passages or settings: invisible until rebuilt
    ranges = retriever.plan_parts(len(passages))
    parts = [{"part": p, "start": start, "stop": stop, "dir": f"part-{p:05d}"} for p, (start, stop) in enumerate(ranges)]
    for part in parts[rank::world]:
        # a worker killed while building its part left a temporary folder: the part is this worker's, so is the mess
        for stale in glob.glob(os.path.join(directory, f".{part['dir']}{TMP_MARK}*")):
            shutil.rmtree(stale, ignore_errors=True)
        if _part_done(directory, part, wanted):
            continue
        final = os.path.join(directory, part["dir"])
        tmp = staging_directory(final)
        retriever.build_part(passages, part["start"], part["stop"], tmp, progress)
        write_json_atomic(os.path.join(tmp, PART_META), {**wanted, **part})
        commit_directory(tmp, final)
    wait_until(lambda: sum(_part_done(directory, part, wanted) for part in parts), len(parts),
          f"index parts built by other workers in {directory}")
    meta = {**wanted, "parts": parts}
    if rank == 0:
        write_json_atomic(meta_path, meta)
    else:
        wait_until(lambda: int(read_json(meta_path) == meta), 1, f"{INDEX_META} from worker 0 in {directory}")
    return meta


def _part_done(directory: str, part: dict[str, Any], wanted: dict[str, Any]) -> bool:
    meta = read_json(os.path.join(directory, part["dir"], PART_META))
    return meta is not None and all(meta.get(key) == value for key, value in {**wanted, **part}.items())

