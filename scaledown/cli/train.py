# `python train.py` / `scaledown train`: parse flags, load data, build the model, train, report accuracy.
from __future__ import annotations

import json
import os
import sys
from typing import Callable, Optional, Sequence

from scaledown.cli.args import build_parser, config_from_args
from scaledown.cli.errors import run_cli

DESCRIPTION = ("Train a ScaleDown (OSCAR-style) compressor + LoRA generator. With no data flags it trains the "
               "offline tiny preset on built-in synthetic data on this machine and reports held-out accuracy "
               "before and after.")


def load_datasets(config, args):
    """Training and eval datasets: the user's files, or the built-in synthetic task (a curriculum, kept in order)."""
    from scaledown.data import ScaleDownDataset
    from scaledown.data.synthetic import builtin_training_rows, generate_examples

    if args.train_data:
        train = ScaleDownDataset(args.train_data, config)
        evaluation = ScaleDownDataset(args.eval_data, config) if args.eval_data else None
        return train, evaluation
    if "shuffle_data" not in vars(args):  # the curriculum only works in its order
        config.shuffle_data = False
    rows = builtin_training_rows(config)
    if args.num_train_examples:
        rows = rows[:args.num_train_examples]
    train = ScaleDownDataset(rows, config)
    evaluation = (ScaleDownDataset(args.eval_data, config) if args.eval_data else
                  ScaleDownDataset(generate_examples(args.num_eval_examples, seed=config.seed + 10_000), config))
    return train, evaluation


def train_main(argv: Optional[Sequence[str]] = None, prog: str = "train.py",
               backend_factory: Optional[Callable] = None) -> int:
    parser = build_parser(prog, DESCRIPTION)
    tokens = list(sys.argv[1:] if argv is None else argv)
    if {"--dry_run", "--dry-run"} & set(tokens):   # `--device trainium --dry_run`: the Trn1 launcher's dry run
        known, _ = parser.parse_known_args(tokens)
        if getattr(known, "device_type", None) == "trainium":
            from scaledown.cli.train_neuron import neuron_main
            return neuron_main(tokens, prog)
    args = parser.parse_args(tokens)
    config = config_from_args(args, default_preset=None if args.train_data else "tiny")
    return run_training(config, args, backend_factory)


def run_training(config, args, backend_factory: Optional[Callable] = None) -> int:
    from scaledown.models import ScaleDownModel
    from scaledown.training import ScaleDownTrainer

    backend = backend_factory(config) if backend_factory else default_backend(config)
    train, evaluation = load_datasets(config, args)
    if args.init_from:
        model = backend.build_model(lambda: ScaleDownModel.from_pretrained(args.init_from, **_init_overrides(config)))
    else:
        model = backend.build_model(lambda: ScaleDownModel(config))
    trainer = ScaleDownTrainer(model, config, train, evaluation, backend=backend, resume_from=args.resume_from)
    result = trainer.train()
    if backend.is_main:
        summary = {"steps": result.steps, "interrupted": result.interrupted, "train_seconds": result.train_seconds,
                   "eval_before": result.eval_before, "eval_after": result.eval_after, "final_dir": result.final_dir}
        os.makedirs(config.output_dir, exist_ok=True)
        with open(os.path.join(config.output_dir, "train_summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        if result.eval_before and result.eval_after:
            before = result.eval_before.get("eval/accuracy", 0.0)
            after = result.eval_after.get("eval/accuracy", 0.0)
            print(f"held-out accuracy (answer contained in output, {len(evaluation)} examples): "
                  f"before {before:.3f} -> after {after:.3f}", flush=True)
    backend.close()
    return 143 if result.interrupted else 0


def default_backend(config):
    """Trainium runs go to the NeuronX Distributed backend; everything else is one process."""
    if config.device_type == "trainium":
        from scaledown.training.backends.neuron import NeuronBackend  # needs the Neuron 2.28 stack
        return NeuronBackend(config)
    from scaledown.training.backends.local import LocalBackend
    return LocalBackend(config)


def _init_overrides(config) -> dict:
    """Training settings of this run override what the saved model folder recorded."""
    from scaledown.config import MODEL_FIELDS
    return {k: v for k, v in config.to_dict().items() if k not in MODEL_FIELDS and k != "preset"}


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(lambda: train_main(argv))
