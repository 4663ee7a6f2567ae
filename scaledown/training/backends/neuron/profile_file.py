# Trainium profiles (neuron_configs/*.json): parallel degrees, processes per node, compiler and runtime environment.
"""A profile file names one way to lay the model over Trn1 nodes, e.g. neuron_configs/tp8_pp4.json:

    {"description": "...", "tensor_parallel_size": 8, "pipeline_parallel_size": 4, "zero1": true,
     "processes_per_node": 32, "precompile_steps": 4, "master_port": 44000,
     "compiler_env": {"NEURON_CC_FLAGS": "--model-type transformer ..."},
     "runtime_env": {"NEURON_RT_ASYNC_EXEC_MAX_INFLIGHT_REQUESTS": "3", "FI_PROVIDER": "efa", ...}}

Keys that are ScaleDownConfig fields (the degrees, zero1, sequence_parallel, kv_replication, num_microbatches)
become defaults of the run; flags and --config override them. The rest is for the launchers: torchrun's
--nproc_per_node, the environment exported before torch_xla starts, the pre-compilation pass.
"""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from typing import Any, Optional

from scaledown.config import fields_where
from scaledown.errors import ConfigError
from scaledown.repo_files import repo_path
from scaledown.text_files import load_json

CONFIG_KEYS = fields_where(neuron_profile=True)   # the ScaleDownConfig settings a profile file may set
LAUNCH_KEYS = ("description", "processes_per_node", "precompile_steps", "master_port", "compiler_env", "runtime_env")
TRN1_CORES_PER_NODE = 32        # trn1.32xlarge: 16 chips x 2 NeuronCores


@dataclass
class NeuronProfile:
    path: Optional[str] = None
    description: str = ""
    processes_per_node: int = TRN1_CORES_PER_NODE
    precompile_steps: int = 4
    master_port: int = 44000
    compiler_env: dict[str, str] = field(default_factory=dict)
    runtime_env: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)     # the ScaleDownConfig fields it sets

    @classmethod
    def from_file(cls, path: str) -> "NeuronProfile":
        if not os.path.isfile(path):
            here = repo_path("neuron_configs")
            shipped = sorted(f for f in os.listdir(here) if f.endswith(".json")) if os.path.isdir(here) else []
            raise ConfigError(f"--neuron_config {path} does not exist. Pass a profile JSON such as "
                              f"neuron_configs/{shipped[0] if shipped else 'tp8_pp1.json'}"
                              + (f" (shipped: {', '.join(shipped)})" if shipped else "") + ".")
        values = load_json(path, ConfigError, what="profile JSON (--neuron_config)")
        if not isinstance(values, dict):
            raise ConfigError(f"--neuron_config {path} must hold a JSON object of settings.")
        return cls.from_dict(values, path)

    @classmethod
    def from_dict(cls, values: dict[str, Any], path: Optional[str] = None) -> "NeuronProfile":
        where = f"--neuron_config {path}" if path else "neuron profile"
        unknown = sorted(set(values) - set(CONFIG_KEYS) - set(LAUNCH_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}. Known keys: "
                              f"{', '.join(CONFIG_KEYS + LAUNCH_KEYS)}.")
        for key in ("processes_per_node", "precompile_steps", "master_port"):
            if key in values and not (isinstance(values[key], int) and values[key] >= (0 if key == "precompile_steps" else 1)):
                raise ConfigError(f"{where}: {key}={values[key]!r} must be a positive integer.")
        for key in ("compiler_env", "runtime_env"):
            env = values.get(key, {})
            if not isinstance(env, dict) or not all(isinstance(v, (str, int, float)) for v in env.values()):
                raise ConfigError(f"{where}: {key} must map variable names to string values.")
        return cls(path=path, description=str(values.get("description", "")),
                   processes_per_node=values.get("processes_per_node", TRN1_CORES_PER_NODE),
                   precompile_steps=values.get("precompile_steps", 4), master_port=values.get("master_port", 44000),
                   compiler_env={k: str(v) for k, v in values.get("compiler_env", {}).items()},
                   runtime_env={k: str(v) for k, v in values.get("runtime_env", {}).items()},
                   settings={k: values[k] for k in CONFIG_KEYS if k in values})

    def config_values(self) -> dict[str, Any]:
        return dict(self.settings)

    def environment(self) -> dict[str, str]:
        """Compiler then runtime variables (runtime wins on a clash), as exported before torch_xla starts."""
        return {**self.compiler_env, **self.runtime_env}


def default_profile() -> NeuronProfile:
    """What a run without --neuron_config uses: one Trn1 node, no extra environment."""
    return NeuronProfile()


def shell_exports(path: Optional[str]) -> str:
    """`export` lines for slurm/train_trn1.sh: the profile's environment plus NPROC_PER_NODE, MASTER_PORT and
    PRECOMPILE_STEPS (variables already set in the job's environment win)."""
    profile = NeuronProfile.from_file(path) if path else default_profile()
    values = {**profile.environment(), "NPROC_PER_NODE": str(profile.processes_per_node),
              "MASTER_PORT": str(profile.master_port), "PRECOMPILE_STEPS": str(profile.precompile_steps)}
    return "\n".join(f"export {k}=${{{k}:-{shlex.quote(v)}}}" for k, v in values.items())
