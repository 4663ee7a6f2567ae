# Data-pipeline throughput (rows/s) with 1 and 2 local workers on this machine, side by side in one run.
"""Both runs answer the same synthetic queries against the same prebuilt index (a warm-up run builds
it), with tiny SPLADE, tiny cross-encoder and tiny teacher, through the real CLI
(`python -m scaledown.data.prepare_dataset --workers N`). Printed per run: rows/s over the whole
worker stage (process start, model loading, answering) and rows/s once models were loaded, and
the 2-worker / 1-worker ratios. Also checks that both runs wrote the same rows.

    python benchmarks/prepare_throughput.py [--queries 96] [--max_answer_tokens 16] [--threads_per_worker 1]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def run(made_queries: str, corpus: str, output: str, index_dir: str, workers: int, args) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["OMP_NUM_THREADS"] = str(args.threads_per_worker)   # same per-process threads: compares process scaling
    command = [sys.executable, "-m", "scaledown.data.prepare_dataset", "--queries", made_queries,
               "--corpus_path", corpus, "--output_file", output, "--index_dir", index_dir,
               "--retriever_model", "tiny", "--reranker", "tiny", "--teacher", "tiny",
               "--max_answer_tokens", str(args.max_answer_tokens), "--batch_size", str(args.batch_size),
               "--block_size", str(args.block_size), "--workers", str(workers), "--progress", "false"]
    start = time.time()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.time() - start
    if proc.returncode != 0:
        sys.exit(f"run with {workers} worker(s) failed:\n{proc.stderr[-3000:]}")
    summary = json.load(open(os.path.splitext(output)[0] + ".prep/summary.json"))
    summary["wall_seconds"] = wall
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--queries", type=int, default=96)
    parser.add_argument("--max_answer_tokens", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--block_size", type=int, default=8)
    parser.add_argument("--threads_per_worker", type=int, default=1,
                        help="torch threads of each worker process in both runs (OMP_NUM_THREADS)")
    args = parser.parse_args()

    from scaledown.data.synthetic_corpus import write_synthetic_corpus
    with tempfile.TemporaryDirectory() as tmp:
        made = write_synthetic_corpus(os.path.join(tmp, "src"), args.queries, seed=0)
        index_dir = os.path.join(tmp, "index")
        warm = os.path.join(tmp, "warm_queries.jsonl")
        with open(made.queries_path) as src, open(warm, "w") as dst:
            dst.writelines(src.readlines()[:2])
        run(warm, made.corpus_path, os.path.join(tmp, "warm.json"), index_dir, 1, args)   # builds the index
        results = {}
        for workers in (1, 2):
            output = os.path.join(tmp, f"workers{workers}.json")
            results[workers] = run(made.queries_path, made.corpus_path, output, index_dir, workers, args)
            results[workers]["rows_list"] = json.load(open(output))
        same = results[1]["rows_list"] == results[2]["rows_list"]

    print(f"{args.queries} queries, tiny SPLADE + cross-encoder + teacher, {args.max_answer_tokens} answer tokens, "
          f"{os.cpu_count()} CPU cores, {args.threads_per_worker} thread(s) per worker; index prebuilt")
    print(f"{'workers':>8} {'rows':>5} {'wall s':>8} {'stage rows/s':>13} {'answering rows/s':>17}")
    for workers, r in results.items():
        print(f"{workers:>8} {r['rows']:>5} {r['wall_seconds']:>8.1f} {r['rows_per_second']:>13.2f} "
              f"{r['answering_rows_per_second']:>17.2f}")
    print(f"ratio 2/1: stage rows/s x{results[2]['rows_per_second'] / results[1]['rows_per_second']:.2f}, "
          f"answering rows/s x{results[2]['answering_rows_per_second'] / results[1]['answering_rows_per_second']:.2f}")
    print(f"same rows from 1 and 2 workers: {same}")


if __name__ == "__main__":
    main()
