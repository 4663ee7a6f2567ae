# `python train.py` / `scaledown train`: parse flags, then run (cli/training_run.py) on the one-process backend.
from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence

from scaledown.cli.args import build_parser
from scaledown.cli.errors import run_cli
from scaledown.cli.training_run import (check_stage_flags, load_datasets, run_name, run_training,  # noqa: F401
                                        train_config)

DESCRIPTION = ("Train a ScaleDown (OSCAR-style) compressor + LoRA generator. With no data flags it trains the "
               "offline tiny preset on built-in synthetic data on this machine and reports held-out accuracy "
               "before and after. --stage pretrain first teaches a separate compressor (modernbert, causal_lm) "
               "to feed the generator on plain text (auto-encoding + continuation); fine-tune from it with "
               "--init_from PRE/final.")


def train_main(argv: Optional[Sequence[str]] = None, prog: str = "train.py",
               backend_factory: Optional[Callable] = None) -> int:
    parser = build_parser(prog, DESCRIPTION)
    tokens = list(sys.argv[1:] if argv is None else argv)
    if backend_factory is None and not ({"--dry_run", "--dry-run"} & set(tokens)):
        from scaledown.cli.task_check import check_task_launch, launched_as_tasks
        if launched_as_tasks():   # one of several srun tasks / torchrun ranks: before any data or model is built
            check_task_launch("launchers/train_trn1.py" if _asks_trainium(parser, tokens) else "train.py", tokens)
    if {"--dry_run", "--dry-run"} & set(tokens):   # `--device trainium --dry_run`: the Trn1 launcher's dry run
        known, _ = parser.parse_known_args(tokens)
        if getattr(known, "device_type", None) == "trainium":
            from scaledown.cli.train_neuron import neuron_main
            return neuron_main(tokens, prog)
    args = parser.parse_args(tokens)
    return run_training(train_config(args), args, backend_factory, prog=prog)


def _asks_trainium(parser, tokens) -> bool:
    known, _ = parser.parse_known_args(tokens)
    return getattr(known, "device_type", None) == "trainium"


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(lambda: train_main(argv))
