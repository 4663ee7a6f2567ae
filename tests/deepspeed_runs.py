# Helpers for tests that start real DeepSpeed ranks: launch commands, TensorBoard losses, checkpoint reading.
from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
from typing import Optional, Sequence

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(ROOT, "launchers", "train_gpu.py")
DS_CONFIGS = os.path.join(ROOT, "ds_configs")
BIN = os.path.dirname(sys.executable)
# a short run of the tiny preset: small batches, few eval rows, one log line per step
SMALL = ["--batch_size", "8", "--micro_batch_size", "4", "--logging_steps", "1", "--num_eval_examples", "5",
         "--eval_max_examples", "3"]


def require(tool: str, available: bool, env_flag: str, install: str) -> None:
    """Skip when `tool` is missing, unless `env_flag`=1 (CI), where a missing tool fails the test."""
    if available:
        return
    if os.environ.get(env_flag) == "1":
        pytest.fail(f"{env_flag}=1 but {tool} is not available ({install})")
    pytest.skip(f"{tool} is not available ({install})")


def require_deepspeed() -> None:
    try:
        import deepspeed  # noqa: F401
        ok = shutil.which("g++") is not None
    except ImportError:
        ok = False
    require("DeepSpeed (with g++ for its JIT-built ops)", ok, "SCALEDOWN_REQUIRE_DEEPSPEED",
            "pip install deepspeed ninja; apt-get install g++")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(kind: str, nproc: int, args: Sequence[str]) -> list[str]:
    """The launch command of launchers/train_gpu.py under `kind`: deepspeed, torchrun, mpirun or python."""
    port = str(free_port())
    if kind == "deepspeed":
        return [os.path.join(BIN, "deepspeed"), "--num_gpus", str(nproc), "--master_port", port, LAUNCHER, *args]
    if kind == "torchrun":
        return [os.path.join(BIN, "torchrun"), "--nproc_per_node", str(nproc), "--master_port", port, LAUNCHER, *args]
    if kind == "mpirun":
        root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
        return ["mpirun", *root, "--oversubscribe", "-np", str(nproc), "-x", "PYTHONPATH", "-x", "OMP_NUM_THREADS",
                "-x", f"MASTER_PORT={port}", sys.executable, LAUNCHER, *args]
    assert kind == "python" and nproc == 1
    return [sys.executable, LAUNCHER, *args]


def run(kind: str, nproc: int, args: Sequence[str], env: dict, log: str, timeout: float = 900
        ) -> subprocess.CompletedProcess:
    with open(log, "w") as f:
        proc = subprocess.run(command(kind, nproc, args), env=env, stdout=f, stderr=subprocess.STDOUT,
                              timeout=timeout, cwd=ROOT)
    return proc


def log_tail(log: str, chars: int = 4000) -> str:
    with open(log, errors="replace") as f:
        return f.read()[-chars:]


def tb_scalars(run_dir: str, tag: str) -> dict[int, float]:
    """step -> value of a TensorBoard scalar under run_dir/runs."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(os.path.join(run_dir, "runs"), size_guidance={"scalars": 0})
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)} if tag in acc.Tags()["scalars"] else {}


def zero3_config(path: str, **zero_overrides) -> str:
    """The shipped zero3.json with some zero_optimization keys changed, written to `path`."""
    with open(os.path.join(DS_CONFIGS, "zero3.json")) as f:
        values = json.load(f)
    values["zero_optimization"].update(zero_overrides)
    with open(path, "w") as f:
        json.dump(values, f)
    return path


def partition_reports(checkpoint: str) -> list[dict]:
    with open(os.path.join(checkpoint, "zero_partitions.json")) as f:
        return json.load(f)["ranks"]


def assert_halved(checkpoint: str, world_size: int = 2) -> int:
    """Every parameter is split over the ranks (about numel/world each) and none is held whole between steps."""
    reports = partition_reports(checkpoint)
    assert len(reports) == world_size
    names = list(reports[0])
    for name in names:
        numel = reports[0][name]["numel"]
        shares = [r[name]["partition"] for r in reports]
        assert all(s == -(-numel // world_size) for s in shares), (name, numel, shares)
        assert all(r[name]["resident"] == 0 for r in reports), (name, [r[name]["resident"] for r in reports])
    return len(names)


def make_folder_generator(path: str, seed: int = 0) -> str:
    """A Mistral-shaped model saved like a hub checkpoint (+ the tiny tokenizer): the pretrained-model path."""
    import torch
    from transformers import AutoModelForCausalLM
    from scaledown.models import tiny_models
    from scaledown.models.tiny_tokenizer import load_tiny_tokenizer
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(tiny_models.tiny_model_config(tiny_models.TINY_GENERATOR)).save_pretrained(path)
    load_tiny_tokenizer().save_pretrained(path)
    return path


def zero_to_fp32(checkpoints: str, out: str, env: dict, tag: Optional[str] = None) -> dict:
    """DeepSpeed's own consolidation script (copied next to the checkpoints) -> {parameter name: tensor}."""
    from safetensors.torch import load_file
    cmd = [sys.executable, os.path.join(checkpoints, "zero_to_fp32.py"), checkpoints, out, "--safe_serialization"]
    subprocess.run(cmd + (["-t", tag] if tag else []), env=env, check=True, capture_output=True, timeout=300)
    state = {}
    for file in glob.glob(os.path.join(out, "*.safetensors")):
        state.update(load_file(file))
    return state


def load_export(final_dir: str) -> dict[str, dict]:
    """The safetensors files of our Hugging Face export: {"compressor"|"adapter"|"base": {key: tensor}}."""
    from safetensors.torch import load_file
    files = {"compressor": ("compressor", "model.safetensors"), "adapter": ("generator_adapter", "adapter_model.safetensors"),
             "base": ("generator_base", "model.safetensors")}
    return {part: load_file(os.path.join(final_dir, *where)) for part, where in files.items()
            if os.path.exists(os.path.join(final_dir, *where))}


def export_key(name: str) -> tuple[str, str]:
    """Where the engine's parameter `name` (ScaleDownModel.named_parameters()) lands in the export."""
    if name.startswith("compressor."):
        return "compressor", name[len("compressor."):]
    rest = name[len("generator."):]
    if ".lora_" in rest:  # peft's adapter file drops the adapter name
        return "adapter", rest.replace(".default.", ".")
    return "base", rest[len("base_model.model."):].replace(".base_layer.", ".")
