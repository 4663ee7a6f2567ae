# Command-line flags generated from ScaleDownConfig (one source of help text), plus run-only flags.
from __future__ import annotations

import argparse
import dataclasses
import difflib
import sys
import typing
from typing import Any, Optional, Sequence

from scaledown.cli.oscar_base_flags import add_base_model_flags
from scaledown.config import ScaleDownConfig, read_config_file
from scaledown.errors import ConfigError
from scaledown.training.backends.neuron.profile_file import NeuronProfile

# Seed flag names kept working: --num_layers, --device.
ALIASES = {"num_compressor_layers": ["--num_layers"], "device_type": ["--device"],
           "tensor_parallel_size": ["--tp"], "pipeline_parallel_size": ["--pp"]}


class FriendlyParser(argparse.ArgumentParser):
    """argparse that ends bad usage with one paragraph naming the fix (and a close flag), exit 2.

    With `config_run_flags` set (the train commands), run flags written in the --config file fill the
    ones the command line left out (see apply_config_run_flags)."""

    config_run_flags = False

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        tokens = list(sys.argv[1:] if args is None else args)
        # argparse reports a missing required flag before a mistyped one, hiding the typo: name the typo first
        unknown = [t for t in tokens[:tokens.index("--") if "--" in tokens else len(tokens)]
                   if t.startswith("--") and t.split("=")[0] not in self._option_string_actions]
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}")
        parsed = super().parse_args(args, namespace)
        return apply_config_run_flags(self, parsed) if self.config_run_flags else parsed

    def error(self, message: str) -> typing.NoReturn:
        hint = ""
        if "unrecognized arguments" in message:
            known = [s for a in self._actions for s in a.option_strings]
            for token in message.split(":", 1)[1].split():
                if token.startswith("-"):
                    close = difflib.get_close_matches(token.split("=")[0], known, n=1)
                    if close:
                        hint += f" Did you mean {close[0]}?"
        sys.stderr.write(f"{self.prog}: error: {message}.{hint} Run `{self.prog} --help` to list the flags.\n")
        sys.exit(2)


def str2bool(value: str) -> bool:
    if isinstance(value, bool):
        return value
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _arg_type(annotation: Any):
    text = str(annotation)
    if "bool" in text:
        return str2bool
    if "int" in text and "float" not in text:
        return int
    if "float" in text:
        return float
    return str


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per ScaleDownConfig field (underscores, with hyphenated aliases); default: unset."""
    group = parser.add_argument_group("model, data and training settings (ScaleDownConfig)")
    hints = typing.get_type_hints(ScaleDownConfig)
    for f in dataclasses.fields(ScaleDownConfig):
        names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        names += ALIASES.get(f.name, [])
        kind = _arg_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        extra = {"nargs": "?", "const": True} if kind is str2bool else {}
        group.add_argument(*names, dest=f.name, type=kind, default=argparse.SUPPRESS, metavar=f.name.upper(),
                           help=f"{f.metadata.get('help', '')} (default: {default})", **extra)


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    run = parser.add_argument_group("run")
    run.add_argument("--config", help="YAML or JSON file of ScaleDownConfig settings, and of run flags such as "
                     "train_data, eval_data or resume_from; flags on the command line override it.")
    run.add_argument("--train_data", "--train-data", help="Training rows: .json list, .jsonl or .parquet "
                     "(query, documents, answer[, reranking_scores]). Omitted: built-in synthetic data "
                     "with the tiny preset.")
    run.add_argument("--eval_data", "--eval-data", help="Held-out rows for evaluation (same format).")
    run.add_argument("--resume_from", "--resume-from", help="'auto' (newest complete checkpoint of "
                     "--output_dir; a new run when there is none) or a checkpoint / run folder. The run continues "
                     "with the settings and data recorded in the checkpoint; flags may change only free settings "
                     "(parallel degrees, micro-batch, backend, logging, eval cadence, output).")
    run.add_argument("--allow_changed_settings", "--allow-changed-settings", action="store_true",
                     help="With --resume_from: accept flags that change settings defining the run (data, objective, "
                          "schedule, global batch, seed); they are printed and recorded in trainer_state.json.")
    run.add_argument("--overwrite_output_dir", "--overwrite-output-dir", action="store_true",
                     help="Start a new run in an --output_dir that holds another run (final/, checkpoints, "
                          "train_summary.json): the previous run's files are deleted first.")
    run.add_argument("--init_from", "--init-from", help="Start from a saved ScaleDown model folder "
                     "(e.g. a pretraining run's OUTPUT_DIR/final) or a released OSCAR folder (the naver/oscar-* format; "
                     "its base models by hub id, or from --generator_path / --compressor_path).")
    add_base_model_flags(run)
    run.add_argument("--init_compressor_from", "--init-compressor-from", metavar="DIR",
                     help="Take only the compressor of a saved model folder (e.g. a pretraining run's OUTPUT_DIR/final) "
                          "and pair it with this run's generator and a fresh LoRA; its architecture settings "
                          "(compressor_type, num_memory_tokens, ...) are taken from the folder.")
    run.add_argument("--pretrain_data", "--pretrain-data", metavar="PATH",
                     help="--stage pretrain: plain text, a .jsonl/.json/.parquet corpus (KILT lines or rows with "
                          "'text'/'contents') or a folder saved by datasets' save_to_disk; chunked to doc_max_length "
                          "compressor tokens (kept under OUTPUT_DIR/pretraining_passages). Omitted: built-in "
                          "synthetic text.")
    run.add_argument("--pretrain_eval_data", "--pretrain-eval-data", metavar="PATH",
                     help="--stage pretrain: held-out text for reconstruction accuracy (same formats). Omitted: "
                          "every 50th document of --pretrain_data (at most 512 chunks) is held out.")
    run.add_argument("--no_progress", "--no-progress", action="store_true",
                     help="No progress bar (console lines every logging_steps remain). Bars are also off when "
                          "stderr is not a terminal (SLURM, nohup, `> run.log`) or SCALEDOWN_NO_PROGRESS is set.")
    run.add_argument("--skip_bad_rows", "--skip-bad-rows", action="store_true", default=None,
                     help="--stage pretrain: skip and count malformed corpus lines instead of stopping at the first.")
    run.add_argument("--num_train_examples", "--num-train-examples", type=int, default=None,
                     help="Built-in synthetic data only: training rows to draw (default: one fresh row per "
                          "example seen, batch_size x steps).")
    run.add_argument("--num_eval_examples", "--num-eval-examples", type=int, default=None,
                     help="Built-in synthetic data only: held-out rows for the before/after accuracy (default 500).")


def build_parser(prog: str, description: str) -> FriendlyParser:
    parser = FriendlyParser(prog=prog, description=description, allow_abbrev=False,
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_run_flags(parser)
    add_config_flags(parser)
    parser.config_run_flags = True
    return parser


def explicit_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ScaleDownConfig values this command sets itself: --neuron_config profile < --config file < flags.
    Run flags held in the --config file (train_data, ...) are not settings: see apply_config_run_flags."""
    fields = set(ScaleDownConfig.field_names())
    values: dict[str, Any] = {}
    if getattr(args, "neuron_config", None):
        values.update(NeuronProfile.from_file(args.neuron_config).config_values())
    if getattr(args, "config", None):
        run_keys = set(vars(args)) - fields
        values.update({k: v for k, v in read_config_file(args.config).items() if k not in run_keys})
    values.update({k: v for k, v in vars(args).items() if k in fields})
    return values


def config_from_args(args: argparse.Namespace, default_preset: Optional[str] = None,
                     base: Optional[dict[str, Any]] = None, user_data: bool = False,
                     unless_flagged: Optional[dict[str, Any]] = None) -> ScaleDownConfig:
    """defaults < preset < base (e.g. a reused compressor's architecture) < --neuron_config profile < --config file
    < flags. user_data: the run reads the user's files, so a preset's synthetic-task schedule and lengths do not
    apply. unless_flagged: values that hold unless the command line gives that flag (over a --config file too)."""
    values: dict[str, Any] = dict(base or {})
    values.update(explicit_settings(args))
    values.update({k: v for k, v in (unless_flagged or {}).items() if k not in vars(args)})
    if "preset" not in values and default_preset and "generator_model_name" not in values:
        values["preset"] = default_preset
    return ScaleDownConfig.from_dict(values, source=getattr(args, "config", None) or "command line",
                                     user_data=user_data)


def apply_config_run_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Run flags written in the --config file (train_data, eval_data, resume_from, ...: the `run` group's
    names) fill those not given on the command line; the command line wins. Returns `args`."""
    path = getattr(args, "config", None)
    if not path:
        return args
    fields = set(ScaleDownConfig.field_names())
    actions = {a.dest: a for a in parser._actions if a.dest not in fields and a.option_strings}
    for key, value in read_config_file(path).items():
        action = actions.get(key)
        if action is None or key == "config" or getattr(args, key, None) != action.default:
            continue   # a setting, or a flag the command line gave
        if action.type is not None and value is not None and not isinstance(value, bool):
            try:
                value = action.type(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{path}: {key}={value!r} is not valid for --{key}.") from None
        elif isinstance(action, argparse._StoreTrueAction) and not isinstance(value, bool):
            raise ConfigError(f"{path}: {key}={value!r} must be true or false (without quotes).")
        setattr(args, key, value)
    return args


def parse(parser: FriendlyParser, argv: Optional[Sequence[str]]) -> argparse.Namespace:
    return parser.parse_args(argv)


__all__ = ["FriendlyParser", "build_parser", "config_from_args", "explicit_settings", "parse", "str2bool",
           "ConfigError"]
