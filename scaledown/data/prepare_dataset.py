# `python -m scaledown.data.prepare_dataset` / `scaledown prepare-data`: write a training file.
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

from scaledown.cli.args import FriendlyParser
from scaledown.cli.errors import run_cli
from scaledown.errors import DataError


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = FriendlyParser(prog=prog, description="Write a ScaleDown training file. With --num_synthetic_queries "
                       "and no corpus: the built-in synthetic task (no model involved).")
    p.add_argument("--num_synthetic_queries", type=int, default=None, help="rows of the built-in synthetic task")
    p.add_argument("--output_file", required=True, help=".json (a list) or .jsonl (one row a line)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the synthetic facts")
    return p


def write_rows(rows, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        if path.endswith(".jsonl"):
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            json.dump(list(rows), f, ensure_ascii=False, indent=1)
    os.replace(tmp, path)


def prepare_main(argv: Optional[Sequence[str]] = None, prog: str = "prepare_dataset") -> int:
    args = build_parser(prog).parse_args(argv)
    if not args.output_file.endswith((".json", ".jsonl")):
        raise DataError(f"--output_file {args.output_file}: use a .json or .jsonl file name.")
    if not args.num_synthetic_queries:
        raise DataError("nothing to do: pass --num_synthetic_queries N for the built-in synthetic data.")
    from scaledown.data.synthetic import generate_examples
    rows = generate_examples(args.num_synthetic_queries, seed=args.seed)
    write_rows(rows, args.output_file)
    print(f"wrote {len(rows)} rows to {args.output_file}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(lambda: prepare_main(prog="python -m scaledown.data.prepare_dataset")))
