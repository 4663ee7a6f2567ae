# The `scaledown` console command: one subcommand per job, each in its own module (imported lazily).
from __future__ import annotations

import difflib
import importlib
import sys
from typing import Optional, Sequence

from scaledown.cli.errors import run_cli

# subcommand -> (module, function taking argv and prog, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("scaledown.cli.train", "scaledown_train_main", "train a model on any backend: --backend "
              "{auto,local,deepspeed,neuron,torch} (train.py and launchers/ fix one)"),
    "prepare-data": ("scaledown.cli.prepare_data", "prepare_main", "build a training file: retrieval, "
                     "reranking, teacher answers"),
    "eval": ("scaledown.cli.evaluate", "eval_main", "accuracy of a model beside uncompressed RAG and no-docs"),
    "bench": ("scaledown.cli.bench", "bench_main", "FLOPs and latency, compressed vs uncompressed"),
    "convert": ("scaledown.cli.convert", "convert_main", "convert checkpoints between deepspeed, dcp (torch "
                "backend), hf, nxd and released oscar"),
    "compare-runs": ("scaledown.cli.compare_runs", "compare_main", "compare two runs' TensorBoard curves"),
    "plot": ("scaledown.cli.plot", "plot_main", "plot training curves and accuracy comparisons"),
}


def usage() -> str:
    lines = ["usage: scaledown <command> [flags]   (scaledown <command> --help for its flags)", "", "commands:"]
    lines += [f"  {name:<14} {help_text}" for name, (_, _, help_text) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        close = difflib.get_close_matches(name, list(SUBCOMMANDS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        sys.stderr.write(f"scaledown: unknown command '{name}'.{hint}\n{usage()}\n")
        return 2
    module_name, function_name, _ = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    fn = getattr(module, function_name)
    return run_cli(lambda: fn(rest, prog=f"scaledown {name}"))


if __name__ == "__main__":
    sys.exit(main())
