# The training backends that exist: name -> flags, launch resolution, launcher rule, checks, build (one table).
"""Each backend's launch side lives beside its step code (`<name>_launch.py`: flags, settings, dry run, build);
this table lists them for `scaledown train --backend` (scaledown/cli/backends.py chooses among them). It imports
no backend's own packages (deepspeed, torch_xla, neuronx_distributed): they load when the backend is built or its
`requires` check runs.
"""
from __future__ import annotations

import argparse
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

from scaledown.errors import ConfigError
from scaledown.training.backends.deepspeed import launch as deepspeed_launch
from scaledown.training.backends.neuron import launch as neuron_launch
from scaledown.training.backends.neuron.stack import require_stack
from scaledown.training.backends.torch_native import launch as torch_launch


@dataclass(frozen=True)
class BackendSpec:
    """What `scaledown train` needs to know of a backend; each callable imports the backend only when called."""
    name: str
    entry: str                                # the script that fixes this backend
    ranks: str                                # "one": a single process; "many": ranks from a launcher
    build: Callable[[Any, "ResolvedRun"], Any]  # (config, run) -> Backend
    add_flags: Optional[Callable[[argparse.ArgumentParser], None]] = None
    launch: Optional[Callable[[argparse.Namespace], dict]] = None   # args -> ResolvedRun fields
    requires: Optional[Callable[[str], None]] = None   # why chosen -> None, or ConfigError with the install command
    dry_run: Optional[Callable[["ResolvedRun", argparse.Namespace, Sequence[str]], int]] = None
    check: Optional[Callable[["ResolvedRun", Mapping[str, str]], None]] = None   # (run, launcher env): the run's checks
    settings: Mapping[str, Any] = field(default_factory=dict)   # settings this backend implies (e.g. the device)
    description: Optional[str] = None         # the help text of its launcher


@dataclass
class ResolvedRun:
    """A train command resolved before anything heavy loads: two commands that resolve equal objects run the same."""
    backend: str
    config: Any                               # ScaleDownConfig
    profile: Any = None                        # neuron: NeuronProfile (neuron_configs/*.json or the default)
    environment: dict[str, str] = field(default_factory=dict)   # exported before the device runtime starts
    init_from: Optional[str] = None           # a saved model folder the model is built from
    weights_from: Optional[str] = None        # neuron: NxD weights loaded into a meta-device build
    options: dict[str, Any] = field(default_factory=dict)      # the backend's own options (deepspeed config, ...)
    reason: str = field(default="", compare=False)             # what chose the backend (for messages)
    launcher_flags: tuple[str, ...] = field(default=(), compare=False)   # repeated in the printed resume command


def _require_deepspeed(why: str) -> None:
    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(f"{why} trains with DeepSpeed, which is not installed. Install it with "
                          f"`pip install -e '.[gpu]'` (DeepSpeed 0.19.3 or later), or train in one process with "
                          f"--backend local.")


def _require_neuron(why: str) -> None:
    try:
        require_stack(why)
    except ConfigError as exc:
        raise ConfigError(f"{exc} To check the run's profile and batch arithmetic without Neuron, add --dry_run.") from None


def _build_local(config, run):
    from scaledown.training.backends.local import LocalBackend  # torch: loads when the run is built
    return LocalBackend(config)


REGISTRY: dict[str, BackendSpec] = {
    "local": BackendSpec("local", entry="train.py", ranks="one", build=_build_local),
    "deepspeed": BackendSpec("deepspeed", entry=deepspeed_launch.LAUNCHER, ranks="many",
                             build=deepspeed_launch.build_deepspeed, add_flags=deepspeed_launch.add_deepspeed_flags,
                             launch=deepspeed_launch.deepspeed_launch, requires=_require_deepspeed,
                             description=deepspeed_launch.DESCRIPTION),
    "neuron": BackendSpec("neuron", entry=neuron_launch.LAUNCHER, ranks="many", build=neuron_launch.build_neuron,
                          add_flags=neuron_launch.add_neuron_flags, launch=neuron_launch.neuron_launch,
                          requires=_require_neuron, dry_run=neuron_launch.dry_run, check=neuron_launch.check,
                          settings={"device_type": "trainium"}, description=neuron_launch.DESCRIPTION),
    # PyTorch-native (FSDP2 + DCP): chosen by name only; auto keeps deepspeed for multi-rank launchers
    "torch": BackendSpec("torch", entry=torch_launch.LAUNCHER, ranks="many", build=torch_launch.build_torch,
                         check=torch_launch.check, description=torch_launch.DESCRIPTION),
}
