# `scaledown prepare-data` / `python -m scaledown.data.prepare_dataset`: queries -> passages -> answers -> file.
"""Roles: the coordinator (a plain process, or rank 0 under torchrun/srun) checks the inputs, writes
the query list and the chunked corpus and the manifest; workers (local processes, or every rank)
build their share of the index and answer their blocks of queries; the coordinator then merges the
shards into the training file. All coordination goes through files in `<output>.prep/`.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Optional, Sequence

from scaledown.atomic_files import atomic_open
from scaledown.cli.errors import run_cli
from scaledown.cli.prepare_args import build_parser
from scaledown.data.bad_rows import BadRows
from scaledown.data.files import file_identity, read_json, wait_until, write_json_atomic
from scaledown.data.launch import detect_worker_env, pin_gpu, spawn_local_workers
from scaledown.data.manifest import MANIFEST, accept_manifest, all_progress, work_dir_for, write_queries
from scaledown.data.merge import merge_shards
from scaledown.data.passage_store import PassageStore
from scaledown.data.prep_defaults import DEFAULT_RERANKER
from scaledown.data.queries import MS_MARCO_HUB, collect_queries
from scaledown.data.records import check_input_file
from scaledown.data.synthetic import generate_examples
from scaledown.destination import check_destination
from scaledown.errors import ConfigError, DataError


def write_rows(rows, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_open(path, "w", encoding="utf-8") as f:
        if path.endswith(".jsonl"):
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            json.dump(list(rows), f, ensure_ascii=False, indent=1)


def check_args(args) -> None:
    """Flag mistakes, before anything is loaded."""
    if not args.output_file.endswith((".json", ".jsonl")):
        raise DataError(f"--output_file {args.output_file}: use a .json (list) or .jsonl (one row a line) file name.")
    for name in ("top_k", "chunk_tokens", "max_answer_tokens", "batch_size", "block_size", "workers",
                 "index_part_size", "num_ms_marco_queries"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name} {getattr(args, name)}: use a positive integer.")
    if args.num_synthetic_queries < 0:
        raise ConfigError(f"--num_synthetic_queries {args.num_synthetic_queries}: use 0 or a positive count.")
    if args.retrieve_k is not None and args.retrieve_k < args.top_k:
        raise ConfigError(f"--retrieve_k {args.retrieve_k} is below --top_k {args.top_k}; retrieve at least as many "
                          f"passages as the rows keep.")
    if args.retriever == "bm25" and args.retriever_model:
        raise ConfigError(f"--retriever_model {args.retriever_model} is a SPLADE model but --retriever is bm25; "
                          f"drop one of them.")
    wants_retrieval = args.queries or args.download_ms_marco or args.ms_marco_path
    if wants_retrieval and not args.corpus_path:
        raise DataError("--corpus_path is needed: queries from --queries / --download_ms_marco are answered from "
                        "passages retrieved from a corpus (e.g. the KILT knowledge source, JSON lines).")
    if not (wants_retrieval or args.num_synthetic_queries):
        raise DataError("nothing to do: pass --num_synthetic_queries N for the built-in synthetic data, or queries "
                        "(--queries FILE / --download_ms_marco) and --corpus_path for the retrieval pipeline.")
    if args.corpus_path:
        check_input_file(args.corpus_path, "--corpus_path", "corpus")
        if args.queries:
            check_input_file(args.queries, "--queries", "queries file")


def reranker_name(args) -> Optional[str]:
    return args.reranker or (DEFAULT_RERANKER if args.enable_reranking else None)


def requested_settings(args, world: int) -> dict[str, Any]:
    """What the run was asked to do; a restart with equal settings resumes, other settings are refused."""
    ms_marco = None
    if args.download_ms_marco or args.ms_marco_path:
        source = file_identity(args.ms_marco_path) if args.ms_marco_path else "/".join(MS_MARCO_HUB)
        ms_marco = {"source": source, "limit": args.num_ms_marco_queries}
    return {
        "queries": file_identity(args.queries) if args.queries else None, "ms_marco": ms_marco,
        "num_synthetic_queries": args.num_synthetic_queries, "seed": args.seed,
        "corpus": file_identity(args.corpus_path), "chunk_tokens": args.chunk_tokens,
        "chunk_tokenizer": args.chunk_tokenizer, "retriever": args.retriever, "retriever_model": args.retriever_model,
        "index_dir": os.path.abspath(args.index_dir) if args.index_dir else None, "top_k": args.top_k,
        "retrieve_k": args.retrieve_k, "reranker": reranker_name(args), "teacher": args.teacher,
        "teacher_backend": args.teacher_backend, "max_answer_tokens": args.max_answer_tokens,
        "batch_size": args.batch_size, "block_size": args.block_size, "workers": world,
        "skip_bad_rows": args.skip_bad_rows, "trust_remote_code": args.trust_remote_code,
    }


def coordinate(args, world: int):
    """Check inputs and models, write queries, passages and the manifest (or accept a matching one)."""
    from scaledown.data.prep_models import check_available, resolve_retriever, tokenizer_for  # torch
    from scaledown.data.prep_worker import WorkerPlan

    work_dir = work_dir_for(args.output_file)
    os.makedirs(work_dir, exist_ok=True)
    requested = requested_settings(args, world)
    previous = read_json(os.path.join(work_dir, MANIFEST))
    if previous is None or previous.get("requested") != requested:   # not a rerun of the run that wrote it
        check_destination(args.output_file, args.overwrite, "--output_file")
    manifest = accept_manifest(work_dir, requested, args.overwrite)
    if manifest is None:
        check_available(args.teacher, "--teacher", args.trust_remote_code)
        if reranker_name(args):
            check_available(reranker_name(args), "--reranker", args.trust_remote_code)
        kind, model = resolve_retriever(args)
        bad_queries = BadRows(args.skip_bad_rows)
        queries = collect_queries(args.queries, bool(args.download_ms_marco or args.ms_marco_path), args.ms_marco_path,
                                  args.num_ms_marco_queries, args.num_synthetic_queries, args.seed, bad_queries)
        write_queries(work_dir, queries)
        index_dir = requested["index_dir"] or os.path.join(work_dir, "index")
        plan = WorkerPlan(work_dir=work_dir, passages_dir=os.path.join(index_dir, "passages"),
                          index_dir=os.path.join(index_dir, kind if kind == "bm25" else "splade-" + _slug(model)),
                          retriever=kind, retriever_model=model, index_part_size=args.index_part_size,
                          top_k=args.top_k, retrieve_k=args.retrieve_k or args.top_k, reranker=reranker_name(args),
                          teacher=args.teacher, teacher_backend=args.teacher_backend,
                          max_answer_tokens=args.max_answer_tokens, batch_size=args.batch_size,
                          block_size=args.block_size, chunk_tokens=args.chunk_tokens, num_queries=len(queries),
                          trust_remote_code=args.trust_remote_code)
        manifest = {"requested": requested, "plan": plan.recorded(), "bad_queries": bad_queries.to_dict()}
        for line in filter(None, [bad_queries.summary("query rows")]):
            print(line, flush=True)
    plan = WorkerPlan(**manifest["plan"], device=args.device, progress=args.progress)
    chunk_tokenizer = args.chunk_tokenizer or args.teacher
    wanted = PassageStore.wanted_meta(args.corpus_path, args.chunk_tokens, chunk_tokenizer)
    if not PassageStore.is_built(plan.passages_dir, wanted):
        bad_corpus = BadRows(args.skip_bad_rows)
        PassageStore.build(plan.passages_dir, args.corpus_path, tokenizer_for(chunk_tokenizer, args.trust_remote_code),
                           chunk_tokenizer, args.chunk_tokens, bad_corpus, progress=args.progress)
        for line in filter(None, [bad_corpus.summary("corpus rows")]):
            print(line, flush=True)
    write_json_atomic(os.path.join(work_dir, MANIFEST), manifest)   # last: the workers' go signal
    return plan, manifest


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in name.strip("/"))[-80:]


def wait_for_manifest(args, world: int):
    """Ranks > 0 under a launcher: wait until rank 0 has written a manifest for these settings."""
    from scaledown.data.prep_worker import WorkerPlan
    path = os.path.join(work_dir_for(args.output_file), MANIFEST)
    requested = requested_settings(args, world)
    wait_until(lambda: int((read_json(path) or {}).get("requested") == requested), 1, f"{path} from rank 0")
    return WorkerPlan(**read_json(path)["plan"], device=args.device, progress=args.progress)


def finish(args, plan, manifest: dict, world: int, rows_before: int, seconds: float) -> None:
    """Merge the shards, write the summary, print rows and rows/s."""

    wait_until(lambda: sum(bool(p.get("complete")) for p in all_progress(plan.work_dir, world)), world,
               "the other workers' shards")
    count = merge_shards(plan.work_dir, world, args.output_file, progress=args.progress)
    progress = all_progress(plan.work_dir, world)
    skipped: dict[str, int] = {}
    for shard in progress:
        for reason, n in shard["skipped"].items():
            skipped[reason] = skipped.get(reason, 0) + n
    this_run = sum(p["rows"] for p in progress) - rows_before
    windows = [p["answer_window"] for p in progress if p.get("answer_window")]
    answering = max(w[1] for w in windows) - min(w[0] for w in windows) if windows else 0.0
    summary = {"rows": count, "rows_this_run": this_run, "workers": world, "worker_seconds": round(seconds, 3),
               "rows_per_second": round(this_run / max(seconds, 1e-9), 3),
               "answering_seconds": round(answering, 3),   # without process start, model loading, indexing
               "answering_rows_per_second": round(this_run / answering, 3) if answering else None,
               "skipped": skipped,
               "bad_query_rows": manifest.get("bad_queries", {}).get("counts", {}),
               "bad_corpus_rows": PassageStore(plan.passages_dir).meta.get("bad_rows", {}).get("counts", {})}
    write_json_atomic(os.path.join(plan.work_dir, "summary.json"), summary)
    print(f"wrote {count} rows to {args.output_file} (shards, manifest and index: {plan.work_dir})")
    print(f"this run: {this_run} rows in {seconds:.1f}s with {world} worker(s): {summary['rows_per_second']:.2f} rows/s"
          + (f" ({summary['answering_rows_per_second']:.2f} rows/s once models were loaded)" if answering else ""))
    for reason, n in sorted(skipped.items()):
        if n:
            print(f"skipped {n} {reason}")


def prepare_main(argv: Optional[Sequence[str]] = None, prog: str = "prepare_dataset") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(prog).parse_args(argv)
    check_args(args)
    if args.num_synthetic_queries and not args.corpus_path:   # the built-in task, no model involved
        check_destination(args.output_file, args.overwrite, "--output_file")
        rows = generate_examples(args.num_synthetic_queries, seed=args.seed)
        write_rows(rows, args.output_file)
        print(f"wrote {len(rows)} rows to {args.output_file}")
        return 0

    from scaledown.data.prep_worker import run_worker
    worker = detect_worker_env()
    if worker is not None and worker.launcher == "local":   # spawned by a coordinator below
        run_worker(wait_for_manifest(args, worker.world), worker.rank, worker.world)
        return 0
    if worker is not None:   # torchrun / srun: every rank runs this
        if args.workers not in (1, worker.world):
            raise ConfigError(f"--workers {args.workers} conflicts with the {worker.launcher} launcher's "
                              f"{worker.world} processes; drop --workers (each rank is one worker).")
        pin_gpu(worker)
        if worker.rank != 0:
            run_worker(wait_for_manifest(args, worker.world), worker.rank, worker.world)
            return 0
    world = worker.world if worker is not None else args.workers
    plan, manifest = coordinate(args, world)
    rows_before = sum(p["rows"] for p in all_progress(plan.work_dir, world))
    start = time.time()
    if world > 1 and worker is None:
        spawn_local_workers(argv, world)
    else:
        run_worker(plan, 0 if worker is None else worker.rank, world)
    finish(args, plan, manifest, world, rows_before, time.time() - start)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(lambda: prepare_main(prog="scaledown prepare-data")))
