# `scaledown train --backend ...`: the one train front-end; train.py and launchers/*.py call it with their backend fixed.
from __future__ import annotations

import sys
from typing import Callable, Mapping, Optional, Sequence

from scaledown.cli import backends as registry
from scaledown.cli.args import build_parser, explicit_settings
from scaledown.cli.errors import run_cli
from scaledown.cli.training_run import (check_stage_flags, load_datasets, run_name, run_training,  # noqa: F401
                                        train_config)

DESCRIPTION = ("Train a ScaleDown (OSCAR-style) compressor + LoRA generator. With no data flags it trains the "
               "offline tiny preset on built-in synthetic data on this machine and reports held-out accuracy "
               "before and after. --stage pretrain first teaches a separate compressor (modernbert, causal_lm) "
               "to feed the generator on plain text (auto-encoding + continuation); fine-tune from it with "
               "--init_from PRE/final.")
ALL_BACKENDS = tuple(registry.REGISTRY)
TRAIN_PY_BACKENDS = ("local", "neuron")   # train.py: one process, or the seed's `--device trainium`


def build_train_parser(prog: str, allowed: Sequence[str]):
    """Run flags, ScaleDownConfig flags, --backend and the flags of each backend this entry point runs."""
    description = registry.REGISTRY[allowed[0]].description if len(allowed) == 1 else None
    parser = build_parser(prog, description or DESCRIPTION)
    parser.add_argument_group("backend").add_argument(
        "--backend", default="auto", help=registry.AUTO_HELP,
        metavar="{" + ",".join(("auto", *registry.REGISTRY)) + "} or package.module:Class")
    for name in allowed:
        if registry.REGISTRY[name].add_flags:
            registry.REGISTRY[name].add_flags(parser)
    return parser


def resolve_run(argv: Sequence[str], prog: str = "train.py", allowed: Sequence[str] = TRAIN_PY_BACKENDS,
                env: Optional[Mapping[str, str]] = None, check_launch: bool = True):
    """(ResolvedRun, args) of a train command: backend, settings, layout, environment, init path. Every refusal
    (bad flags, a backend that does not fit the launcher or is not installed, bad settings) happens here, before
    any data or model is built. `env`: the launcher's variables (default os.environ)."""
    env = registry.environ() if env is None else env
    tokens = list(argv)
    args = build_train_parser(prog, allowed).parse_args(tokens)
    explicit = explicit_settings(args)
    name, why = registry.choose_backend(args, explicit, allowed, env)
    registry.refuse_foreign_flags(name, why, tokens, allowed)
    spec = registry.spec_for(name)
    dry = bool(getattr(args, "dry_run", False))
    if check_launch and not dry:
        registry.check_launcher(name, why, tokens, env)
        if spec.requires:
            spec.requires(why)
    registry.apply_backend_settings(name, why, args, explicit)
    fields = dict(spec.launch(args)) if spec.launch else {}
    own_flags = fields.pop("launcher_flags", ())
    if "init_from" in fields:
        args.init_from = fields["init_from"]   # NxD weights: no whole model is built on the host (meta device)
    else:
        fields["init_from"] = args.init_from
    config = train_config(args)
    run = registry.ResolvedRun(backend=name, config=config, reason=why,
                               launcher_flags=registry.launcher_flags(name, why, {"launcher_flags": own_flags}),
                               **fields)
    if check_launch and not dry and spec.check:
        spec.check(run, env)
    return run, args


def train_main(argv: Optional[Sequence[str]] = None, prog: str = "train.py",
               backend_factory: Optional[Callable] = None, backends: Sequence[str] = TRAIN_PY_BACKENDS) -> int:
    """Train as the flags say. `backends`: those this entry point runs (train.py: local or neuron; a launcher: its
    one backend; `scaledown train`: all). `backend_factory(config)`: a backend built by the caller instead."""
    tokens = list(sys.argv[1:] if argv is None else argv)
    run, args = resolve_run(tokens, prog, backends, check_launch=backend_factory is None)
    spec = registry.spec_for(run.backend)
    if getattr(args, "dry_run", False):
        if spec.dry_run is None:
            raise AssertionError(f"the {run.backend} backend has no --dry_run flag")   # refused as a foreign flag
        return spec.dry_run(run, args, tokens)
    factory = backend_factory or (lambda config: spec.build(config, run))
    return run_training(run.config, args, factory, prog=prog, launcher_flags=run.launcher_flags)


def scaledown_train_main(argv: Optional[Sequence[str]] = None, prog: str = "scaledown train") -> int:
    """`scaledown train`: every backend, chosen by --backend (auto by default)."""
    return train_main(argv, prog=prog, backends=ALL_BACKENDS)


def launcher_main(backend: str, argv: Optional[Sequence[str]] = None) -> int:
    """launchers/train_gpu.py (deepspeed) and launchers/train_trn1.py (neuron): the front-end, backend fixed."""
    return run_cli(lambda: train_main(argv, prog=registry.REGISTRY[backend].entry, backends=(backend,)))


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(lambda: train_main(argv))
