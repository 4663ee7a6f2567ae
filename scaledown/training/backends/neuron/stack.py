# The Neuron 2.28 software stack: import NxD + torch_xla once, refuse missing packages or another release early.
"""Neuron 2.28 is the last release with NxD Core training (PyTorch 2.9 through torch-xla): torch-neuronx 2.9.x,
neuronx-distributed 0.17.x, torch-xla 2.9.x. The check runs before any model is built or graph compiled.
PyPI's `neuronx-distributed` / `torch-neuronx` are placeholder packages that raise "WRONG PACKAGE" on import:
the real wheels come from AWS's own package index.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType
from typing import Optional

from scaledown.errors import ConfigError

NEURON_RELEASE = "2.28"
# distribution name -> (module, required version prefix)
REQUIRED = {"neuronx-distributed": ("neuronx_distributed", "0.17."),
            "torch-neuronx": ("torch_neuronx", "2.9."),
            "torch-xla": ("torch_xla", "2.9.")}
INSTALL = ("pip install 'scaledown[neuron]' --extra-index-url https://pip.repos.neuron.amazonaws.com "
           "(or the Neuron 2.28 Deep Learning AMI's aws_neuronx_venv_pytorch_2_9 environment)")


def installed_version(distribution: str, module: Optional[ModuleType]) -> Optional[str]:
    """Version from the package metadata, else the module's __version__."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return getattr(module, "__version__", None) if module is not None else None


def check_versions(found: dict[str, Optional[str]], what: str = "--device trainium") -> None:
    """Raise one ConfigError listing every package that is missing or not of Neuron 2.28; `what` names what asked
    for the stack (a flag or a launcher)."""
    problems = []
    for dist, (_, prefix) in REQUIRED.items():
        version = found.get(dist)
        if version is None:
            problems.append(f"{dist} is not installed")
        elif not version.startswith(prefix):
            problems.append(f"{dist} {version} is installed but Neuron {NEURON_RELEASE} needs {prefix}x")
    if problems:
        raise ConfigError(f"{what} needs the Neuron {NEURON_RELEASE} stack (the last release with NxD "
                          f"training): {'; '.join(problems)}. Install it with {INSTALL}. Nothing was compiled.")


@dataclass
class NeuronStack:
    """The modules the backend uses, imported once."""
    nxd: ModuleType               # neuronx_distributed (trainer API re-exported at the top)
    parallel_state: ModuleType    # neuronx_distributed.parallel_layers.parallel_state
    layers: ModuleType            # neuronx_distributed.parallel_layers (ColumnParallelLinear, ...)
    loss_functions: ModuleType    # neuronx_distributed.parallel_layers.loss_functions
    pipeline: ModuleType          # neuronx_distributed.pipeline (NxDPPModel)
    pipeline_trace: ModuleType    # neuronx_distributed.pipeline.trace (the torch.fx tracer NxDPPModel uses)
    xm: ModuleType                # torch_xla.core.xla_model
    loader: ModuleType            # torch_xla.distributed.parallel_loader (MpDeviceLoader)
    versions: dict[str, Optional[str]]


def _import(name: str) -> Optional[ModuleType]:
    try:
        return importlib.import_module(name)
    except Exception:  # ImportError, or PyPI's placeholder raising on import
        return None


def require_stack(what: str) -> None:
    """The version check alone (no process group, no XLA backend registered): the train front-end's early refusal."""
    modules = {dist: _import(module) for dist, (module, _) in REQUIRED.items()}
    check_versions({dist: installed_version(dist, mod) if mod is not None else None for dist, mod in modules.items()},
                   what)


def load_stack() -> NeuronStack:
    """Import and version-check NxD and torch_xla; ConfigError with the install command when that fails."""
    modules = {dist: _import(module) for dist, (module, _) in REQUIRED.items()}
    versions = {dist: installed_version(dist, mod) if mod is not None else None for dist, mod in modules.items()}
    check_versions(versions)
    importlib.import_module("torch_xla.distributed.xla_backend")   # registers the "xla" process-group backend
    return NeuronStack(nxd=modules["neuronx-distributed"],
                       parallel_state=importlib.import_module("neuronx_distributed.parallel_layers.parallel_state"),
                       layers=importlib.import_module("neuronx_distributed.parallel_layers"),
                       loss_functions=importlib.import_module("neuronx_distributed.parallel_layers.loss_functions"),
                       pipeline=importlib.import_module("neuronx_distributed.pipeline"),
                       pipeline_trace=importlib.import_module("neuronx_distributed.pipeline.trace"),
                       xm=importlib.import_module("torch_xla.core.xla_model"),
                       loader=importlib.import_module("torch_xla.distributed.parallel_loader"),
                       versions=versions)
