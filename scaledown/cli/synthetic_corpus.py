# `python -m scaledown.data.synthetic_corpus`: the built-in synthetic task written as corpus.jsonl + queries.jsonl.
import argparse

from scaledown.data.synthetic_corpus_files import write_synthetic_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the synthetic task as corpus.jsonl + queries.jsonl.",
                                     allow_abbrev=False)
    parser.add_argument("--num_queries", type=int, default=200)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    made = write_synthetic_corpus(args.output_dir, args.num_queries, args.seed)
    print(f"wrote {made.corpus_path} and {made.queries_path} ({len(made.gold_ids)} queries)")
