# One data-pipeline worker: its blocks of queries -> retrieval -> reranking -> teacher answers -> its shard.
from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Optional

from tqdm import tqdm

from scaledown.data.manifest import ShardWriter, blocks_of, num_blocks, read_queries
from scaledown.data.merge import INDEX_KEY
from scaledown.data.passage_store import PassageStore
from scaledown.data.rerank import CrossEncoderReranker, reorder
from scaledown.data.retrieval import open_retriever
from scaledown.data.teacher import Teacher
from scaledown.progress import show_progress

NO_PASSAGES = "queries with no retrieved passage"
EMPTY_ANSWERS = "queries with an empty teacher answer"


@dataclass
class WorkerPlan:
    """Everything a worker needs; recorded in the manifest so every worker does the same thing."""
    work_dir: str
    passages_dir: str
    index_dir: str
    retriever: str                  # "bm25" or "splade" (resolved)
    retriever_model: Optional[str]
    index_part_size: int
    top_k: int
    retrieve_k: int
    reranker: Optional[str]         # None: no reranking
    teacher: str
    teacher_backend: str
    max_answer_tokens: int
    batch_size: int
    block_size: int
    chunk_tokens: int
    num_queries: int
    trust_remote_code: bool = False
    device: str = "auto"            # runtime choices below: not part of the recorded plan
    progress: bool = True

    def recorded(self) -> dict[str, Any]:
        values = asdict(self)
        values.pop("device"), values.pop("progress")
        return values


@dataclass
class Pipeline:
    """The loaded models of one worker."""
    passages: Any
    retriever: Any
    reranker: Any
    teacher: Any


def open_index(plan: WorkerPlan, rank: int, world: int):
    """The passages and the retriever, building this worker's share of the index if it is missing."""
    passages = PassageStore(plan.passages_dir)
    retriever = open_retriever(plan.retriever, plan.index_dir, passages, model=plan.retriever_model, rank=rank,
                               world=world, progress=plan.progress, device=plan.device,
                               part_size=plan.index_part_size, trust_remote_code=plan.trust_remote_code)
    return passages, retriever


def load_pipeline(plan: WorkerPlan, passages, retriever) -> Pipeline:
    reranker = (CrossEncoderReranker(plan.reranker, device=plan.device, batch_size=plan.batch_size * 4,
                                     trust_remote_code=plan.trust_remote_code) if plan.reranker else None)
    teacher = Teacher(plan.teacher, device=plan.device, batch_size=plan.batch_size,
                      max_answer_tokens=plan.max_answer_tokens, doc_max_tokens=2 * plan.chunk_tokens,
                      backend=plan.teacher_backend, trust_remote_code=plan.trust_remote_code)
    return Pipeline(passages, retriever, reranker, teacher)


def process_block(pipe: Pipeline, plan: WorkerPlan, first_index: int, queries: list[str]) -> tuple[list[dict], Counter]:
    """Training rows of consecutive queries (first one at position `first_index`) and what was skipped."""
    skipped: Counter = Counter()
    hits = pipe.retriever.search(queries, k=plan.retrieve_k)
    kept = [(first_index + i, q, h) for i, (q, h) in enumerate(zip(queries, hits)) if h]
    if len(kept) < len(queries):
        skipped[NO_PASSAGES] += len(queries) - len(kept)
    if not kept:
        return [], skipped
    texts = [q for _, q, _ in kept]
    documents = [pipe.passages.documents([hit.index for hit in h]) for _, _, h in kept]
    scores: list[Optional[list[float]]] = [None] * len(kept)
    if pipe.reranker is not None:
        ranked = [reorder(docs, s, plan.top_k) for docs, s in zip(documents, pipe.reranker.score(texts, documents))]
        documents, scores = [d for d, _ in ranked], [s for _, s in ranked]
    else:
        documents = [docs[:plan.top_k] for docs in documents]
    answers = pipe.teacher.answer(texts, documents)
    rows = []
    for (index, query, _), docs, row_scores, answer in zip(kept, documents, scores, answers):
        if not answer.strip():
            skipped[EMPTY_ANSWERS] += 1
            continue
        row = {INDEX_KEY: index, "query": query, "documents": docs, "answer": answer}
        if row_scores is not None:
            row["reranking_scores"] = row_scores
        rows.append(row)
    return rows, skipped


def run_worker(plan: WorkerPlan, rank: int, world: int) -> dict[str, Any]:
    """Finish this worker's blocks (resuming after the last recorded one); return its statistics."""

    start = time.time()
    passages, retriever = open_index(plan, rank, world)
    writer = ShardWriter(plan.work_dir, rank, world)
    mine = blocks_of(rank, world, num_blocks(plan.num_queries, plan.block_size))
    todo = mine[writer.blocks_done:]
    size = lambda block: min(plan.block_size, plan.num_queries - block * plan.block_size)  # noqa: E731
    rows_before = writer.progress["rows"]
    window = None
    if todo:
        queries = read_queries(plan.work_dir)
        pipe = load_pipeline(plan, passages, retriever)
        bar = tqdm(total=sum(size(b) for b in mine), initial=sum(size(b) for b in mine[:writer.blocks_done]),
                   desc=f"worker {rank}/{world}" if world > 1 else "answering", unit=" queries",
                   position=rank if world > 1 else None, disable=not show_progress(plan.progress), mininterval=1, smoothing=0.1)
        window = [time.time(), None]   # answering only: models loaded, index ready
        for block in todo:
            first = block * plan.block_size
            rows, skipped = process_block(pipe, plan, first, queries[first:first + size(block)])
            writer.append_block(rows, skipped)
            bar.update(size(block))
        bar.close()
        window[1] = time.time()
    seconds = time.time() - start
    writer.finish(seconds, window)
    written = writer.progress["rows"] - rows_before
    if todo and plan.progress:
        print(f"worker {rank}/{world} (pid {os.getpid()}): {written} rows in {seconds:.1f}s "
              f"({written / max(seconds, 1e-9):.2f} rows/s)", flush=True)
    return {"rows": written, "seconds": seconds}
