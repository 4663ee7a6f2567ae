# Flags of `python -m scaledown.data.prepare_dataset` / `scaledown prepare-data` (underscores, hyphen aliases).
from __future__ import annotations

import argparse

from scaledown.cli.args import FriendlyParser, str2bool
from scaledown.data.prep_defaults import DEFAULT_RERANKER, DEFAULT_SPLADE, DEFAULT_TEACHER
from scaledown.data.queries import OSCAR_MS_MARCO_QUERIES

DESCRIPTION = """Build a ScaleDown training file the OSCAR way: queries -> retrieval over a chunked corpus
(SPLADE or BM25) -> optional cross-encoder reranking -> a teacher LLM's answers from the uncompressed passages.
With --num_synthetic_queries and no corpus it writes the built-in synthetic task (no model involved).
Runs on N local processes (--workers N) or under torchrun / srun (one shard per rank); a killed run
resumes when restarted with the same command. `tiny` for --teacher, --reranker or --retriever_model
selects offline random tiny models (for trying the pipeline without downloads)."""

EPILOG = """examples:
  %(prog)s --num_synthetic_queries 100 --output_file test_data.json
  %(prog)s --download_ms_marco --corpus_path kilt_knowledgesource.json --output_file train_data.json --enable_reranking
  %(prog)s --queries my_queries.jsonl --corpus_path corpus.jsonl --retriever bm25 --teacher tiny --output_file d.jsonl
  torchrun --nproc_per_node 8 -m scaledown.data.prepare_dataset <same flags>"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's line breaks and shows each flag's default."""


def _add(group, name: str, **kwargs) -> None:
    flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    group.add_argument(*flags, dest=name, **kwargs)


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = FriendlyParser(prog=prog, description=DESCRIPTION, epilog=EPILOG, allow_abbrev=False,
                       formatter_class=_HelpFormatter)
    out = p.add_argument_group("output")
    _add(out, "output_file", required=True, help=".json (a list of rows) or .jsonl (one row a line); shards, "
                                                 "manifest and index go to a '<name>.prep' folder beside it")
    _add(out, "overwrite", action="store_true", help="replace an existing --output_file, and discard a previous run "
                                                     "in its folder that used other settings (a run with the same "
                                                     "settings always resumes)")
    q = p.add_argument_group("queries")
    _add(q, "queries", default=None, metavar="FILE", help="your queries: JSONL (or JSON list / parquet) rows "
                                                         "with a 'query' field")
    _add(q, "download_ms_marco", action="store_true", help="add MS MARCO queries through `datasets` (OSCAR)")
    _add(q, "ms_marco_path", default=None, help="local MS MARCO copy for offline use: a save_to_disk folder, "
                                                "the hub repo's parquet/JSON files, or queries.train.tsv")
    _add(q, "num_ms_marco_queries", type=int, default=OSCAR_MS_MARCO_QUERIES,
         help=f"first N MS MARCO train queries (OSCAR: {OSCAR_MS_MARCO_QUERIES})")
    _add(q, "num_synthetic_queries", type=int, default=0, help="questions of the built-in synthetic task; "
                                                               "without a corpus: the whole synthetic rows")
    _add(q, "seed", type=int, default=0, help="seed of the synthetic questions")
    c = p.add_argument_group("corpus and retrieval")
    _add(c, "corpus_path", default=None, help="KILT knowledge source (JSON lines) or any .jsonl/.json/.parquet "
                                              "with a text field (string or list of paragraphs)")
    _add(c, "chunk_tokens", type=int, default=128, help="passage length in tokens, title included (OSCAR: 128)")
    _add(c, "chunk_tokenizer", default=None, help="tokenizer that counts chunk tokens (None: the teacher's)")
    _add(c, "retriever", default="auto", help="bm25, splade, or a SPLADE model name; auto: SPLADE when its model "
                                              "can be loaded, else BM25 (with a notice)")
    _add(c, "retriever_model", default=None, help=f"SPLADE model (None: {DEFAULT_SPLADE}; tiny: offline random)")
    _add(c, "index_dir", default=None, help="where the passages and the index are saved and reused "
                                            "(None: <output>.prep/index)")
    _add(c, "index_part_size", type=int, default=100_000, help="passages per SPLADE index part (the unit shared "
                                                               "between workers and resumed)")
    _add(c, "top_k", type=int, default=5, help="passages per query in the training file (OSCAR: 5)")
    _add(c, "retrieve_k", type=int, default=None, help="passages retrieved per query before reranking keeps "
                                                       "--top_k (None: --top_k)")
    r = p.add_argument_group("reranking and teacher")
    _add(r, "enable_reranking", action="store_true", help=f"score passages with a cross-encoder, reorder them and "
                                                          f"write reranking_scores (model: {DEFAULT_RERANKER})")
    _add(r, "reranker", default=None, help="cross-encoder name (implies --enable_reranking; tiny: offline random)")
    _add(r, "teacher", default=DEFAULT_TEACHER, help="causal LM that writes the answers (tiny: offline random)")
    _add(r, "teacher_backend", default="auto", choices=("auto", "transformers", "vllm"),
         help="auto: vLLM when installed and a GPU is present, else transformers")
    _add(r, "max_answer_tokens", type=int, default=128, help="longest teacher answer in tokens (OSCAR: 128)")
    _add(r, "batch_size", type=int, default=16, help="teacher prompts per generate call (transformers backend)")
    _add(r, "block_size", type=int, default=256, help="queries per unit of work: what a worker finishes and "
                                                      "records at a time")
    _add(r, "trust_remote_code", type=str2bool, default=False, help="let hub models run their own code")
    w = p.add_argument_group("workers and input checks")
    _add(w, "workers", type=int, default=1, help="local worker processes (under torchrun/srun: one per rank)")
    _add(w, "device", default="auto", help="auto (GPU when present), cpu or cuda")
    _add(w, "skip_bad_rows", action="store_true", help="skip malformed corpus/query rows and count them instead of "
                                                       "stopping at the first")
    _add(w, "progress", type=str2bool, default=True, help="progress bars (false for quiet logs)")
    return p
