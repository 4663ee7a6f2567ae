# How `scaledown train` picks a backend from the registry (`--backend auto`) and refuses one that does not fit.
"""The registry (scaledown/training/backends/registry.py) lists the backends; train.py and the launchers fix theirs.

Precedence of `--backend auto` (AUTO_HELP says the same to users), first match wins among the entry point's backends:
an explicit `--backend NAME`; `--deepspeed PATH` -> deepspeed; `--device trainium` (flag or --config) or
`--neuron_config` -> neuron; a multi-rank launcher (WORLD_SIZE > 1 from torchrun / deepspeed, or an MPI world)
-> deepspeed; otherwise local (one process). A plain `srun` step of several tasks without torchrun is refused
for every backend (task_check.py). Every refusal here happens before any data or model is built.
"""
from __future__ import annotations

import argparse
import os
import shlex
from typing import Any, Mapping, Sequence

from scaledown.cli.task_check import check_task_launch
from scaledown.errors import ConfigError
from scaledown.training.backends.registry import REGISTRY, BackendSpec, ResolvedRun  # noqa: F401  (re-exported)
from scaledown.training.backends.user_backend import HELP as IMPORT_HELP  # noqa: F401
from scaledown.training.backends.user_backend import is_import_name, spec_for

AUTO_HELP = ("Which backend trains: local (one process), deepspeed (ZeRO ranks on GPUs/CPUs), neuron (NxD on "
             "Trn1) or torch (PyTorch-native FSDP2 ranks; only when named). auto (default) picks, first match wins: --deepspeed PATH -> deepspeed; --device trainium or "
             "--neuron_config -> neuron; started by a multi-rank launcher (torchrun or deepspeed with WORLD_SIZE > 1, "
             "mpirun) -> deepspeed; otherwise local. A backend given here overrides all of them; flags of another "
             "backend are refused. `scaledown train` also takes " + IMPORT_HELP + ".")
# launcher variables that say how many ranks this process is one of, and who sets them
WORLD_KEYS = (("WORLD_SIZE", "torchrun or deepspeed"), ("OMPI_COMM_WORLD_SIZE", "mpirun"),
              ("PMI_SIZE", "an MPI launcher"), ("MV2_COMM_WORLD_SIZE", "MVAPICH's mpirun"))


def option_strings(name: str) -> list[str]:
    """The flags backend `name` adds (e.g. --deepspeed, --local_rank for deepspeed)."""
    spec = REGISTRY[name]
    if spec.add_flags is None:
        return []
    parser = argparse.ArgumentParser(add_help=False)
    spec.add_flags(parser)
    return [s for action in parser._actions for s in action.option_strings]


def launcher_world(env: Mapping[str, str]) -> tuple[int, str]:
    """(ranks, 'WORLD_SIZE=2 (set by torchrun or deepspeed)') of the launcher that started this process; (1, '')."""
    for key, who in WORLD_KEYS:
        value = env.get(key, "")
        if value.isdigit() and int(value) > 1:
            return int(value), f"{key}={value}, set by {who}"
    return 1, ""


def choose_backend(args: argparse.Namespace, explicit: Mapping[str, Any], allowed: Sequence[str],
                   env: Mapping[str, str]) -> tuple[str, str]:
    """(backend name, what chose it) by the precedence in AUTO_HELP, among the entry point's `allowed` backends."""
    requested = getattr(args, "backend", "auto") or "auto"
    if requested != "auto":
        if is_import_name(requested) and set(allowed) == set(REGISTRY):   # `scaledown train`: imported on use
            return requested, f"--backend {requested}"
        if requested not in allowed:
            raise ConfigError(f"--backend {requested}: this command runs only the {' or '.join(allowed)} backend"
                              f"{'s' if len(allowed) > 1 else ''}. Use `scaledown train --backend {requested}` "
                              f"(or {REGISTRY[requested].entry}) with the same flags."
                              if requested in REGISTRY else
                              f"--backend {requested} is not a backend. Choose one of auto, {', '.join(REGISTRY)}, or "
                              f"package.module:Class (a Backend subclass, `scaledown train` only).")
        return requested, f"--backend {requested}"
    if len(allowed) == 1:
        return allowed[0], REGISTRY[allowed[0]].entry
    world, launcher = launcher_world(env)
    rules = (("deepspeed", getattr(args, "deepspeed", None) is not None, "--deepspeed"),
             ("neuron", explicit.get("device_type") == "trainium", "--device trainium"),
             ("torch", explicit.get("device_type") == "neuron", "--device neuron"),
             ("neuron", getattr(args, "neuron_config", None) is not None, "--neuron_config"),
             ("deepspeed", world > 1, f"a multi-rank launcher ({launcher})"))
    for name, hit, why in rules:
        if hit and name in allowed:
            return name, why
    return allowed[0], "no launcher and no backend flag"


def refuse_foreign_flags(name: str, why: str, tokens: Sequence[str], allowed: Sequence[str]) -> None:
    """A flag of another backend (e.g. --deepspeed under --backend local) would be silently ignored: refuse it."""
    given = {t.split("=", 1)[0] for t in tokens if t.startswith("--")}
    for other in allowed:
        if other == name:
            continue
        stray = [flag for flag in option_strings(other) if flag in given]
        if stray:
            raise ConfigError(f"{stray[0]} is a flag of the {other} backend, but this run trains on the {name} backend "
                              f"({why}). Drop {stray[0]}, or pass --backend {other} to train on {other}.")


def check_launcher(name: str, why: str, tokens: Sequence[str], env: Mapping[str, str]) -> None:
    """The backend fits how this process was started: a one-process backend is not one of several ranks; a plain
    `srun` step's tasks are never ranks (task_check.py)."""
    spec = spec_for(name)
    world, launcher = launcher_world(env)
    if spec.ranks == "one" and world > 1 and why.startswith("--backend"):
        flags = " ".join(shlex.quote(t) for t in tokens)
        raise ConfigError(f"{why} trains in one process, but this process is one of {world} ranks ({launcher}): "
                          f"each rank would train alone and overwrite the others' checkpoints. Pass --backend "
                          f"deepspeed (or --backend auto, which picks it under a launcher) for data-parallel ranks, "
                          f"or start one process without the launcher: `scaledown train {flags}`.")
    check_task_launch(spec.entry, tokens, env)


def apply_backend_settings(name: str, why: str, args: argparse.Namespace, explicit: Mapping[str, Any]) -> None:
    """The settings a backend implies (neuron: device_type trainium) become this command's; a flag or --config value
    saying otherwise is refused."""
    for key, value in spec_for(name).settings.items():
        if key in explicit and explicit[key] != value:
            flag = "--device" if key == "device_type" else f"--{key}"
            raise ConfigError(f"{why} trains with {key} {value}, but {flag} {explicit[key]} was given (on the "
                              f"command line or in --config). Drop {flag}, or choose another backend with --backend.")
        setattr(args, key, value)


def launcher_flags(name: str, why: str, run_fields: Mapping[str, Any]) -> tuple[str, ...]:
    """Flags that choose the same backend again when the printed resume command is run."""
    chose = {"--backend": ("--backend", name), "--device trainium": ("--device", "trainium")}
    head = next((flags for prefix, flags in chose.items() if why.startswith(prefix)), ())
    own = tuple(run_fields.get("launcher_flags", ()))
    return head + own


def environ() -> Mapping[str, str]:
    return os.environ
