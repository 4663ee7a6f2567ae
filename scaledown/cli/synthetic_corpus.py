# `python -m scaledown.data.synthetic_corpus`: the built-in synthetic task written as corpus.jsonl + queries.jsonl.
from scaledown.cli.args import FriendlyParser
from scaledown.data.synthetic_corpus_files import write_synthetic_corpus


def main() -> None:
    parser = FriendlyParser(prog="python -m scaledown.data.synthetic_corpus", allow_abbrev=False,
                            description="Write the synthetic task as corpus.jsonl + queries.jsonl.")
    parser.add_argument("--num_queries", type=int, default=200, help="questions to write (one gold passage each)")
    parser.add_argument("--output_dir", required=True, help="folder for corpus.jsonl and queries.jsonl")
    parser.add_argument("--seed", type=int, default=0, help="the same seed writes the same files")
    args = parser.parse_args()
    made = write_synthetic_corpus(args.output_dir, args.num_queries, args.seed)
    print(f"wrote {made.corpus_path} and {made.queries_path} ({len(made.gold_ids)} queries)")
