# DeepSpeed config files: read, check against the run's flags, fill the keys the harness derives, resolve "auto".
"""The harness owns the keys that must agree with the training loop: the batch triple (from
`plan_batches`), gradient clipping (`--max_grad_norm`), precision (`--use_bf16` / `--use_fp16`),
and the optimizer and schedule (AdamW with two learning-rate groups, `--lr_scheduler`). A file may
leave them out or write "auto"; a concrete value that disagrees with the flags is an error naming both.
DeepSpeed itself does not resolve "auto" (only the Hugging Face Trainer does), so every "auto" left
after that is resolved here or reported.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Optional, Union

from scaledown.config import ScaleDownConfig
from scaledown.errors import ConfigError
from scaledown.text_files import load_json
from scaledown.training.batching import BatchPlan

AUTO = "auto"
# first DeepSpeed release with PR #8148 ("Z3: Support for activation ckpt with frozen params", merged 2026-07-22,
# tagged in v0.19.3): before it, ZeRO-3 + non-reentrant gradient checkpointing + frozen weights (the LoRA
# generator's base) fails in backward with `CheckpointError ... {'shape': [4096]} vs {'shape': [0]}`
ZERO3_CHECKPOINTING_FIX = (0, 19, 3)
SILENT_STEPS = 10**9   # DeepSpeed's own per-step prints: the harness logs steps itself


def read_ds_config(source: Union[str, dict]) -> tuple[dict[str, Any], str]:
    """(config dict, name for messages) from a JSON path or a dict."""
    if isinstance(source, dict):
        return copy.deepcopy(source), "the DeepSpeed config"
    if not os.path.isfile(source):
        raise ConfigError(f"--deepspeed {source}: no such file. Pass a DeepSpeed JSON config, e.g. "
                          f"ds_configs/zero3.json (ZeRO-3), ds_configs/zero3_offload.json or ds_configs/zero2.json.")
    values = load_json(source, ConfigError, what="DeepSpeed config JSON (--deepspeed)")
    if not isinstance(values, dict):
        raise ConfigError(f"--deepspeed {source} must hold a JSON object of DeepSpeed settings.")
    return values, source


def precision_flags(config: ScaleDownConfig, on_gpu: bool, bf16_supported: bool) -> tuple[bool, bool]:
    """(bf16, fp16) the run trains in: the flags, where the device supports them (as the one-process backend)."""
    fp16 = bool(config.use_fp16 and on_gpu)
    bf16 = bool(config.use_bf16 and bf16_supported and not fp16)
    return bf16, fp16


def resolve_ds_config(source: Union[str, dict], config: ScaleDownConfig, plan: BatchPlan, *,
                      hidden_size: Optional[int] = None, on_gpu: bool = False,
                      bf16_supported: bool = True) -> dict[str, Any]:
    """The DeepSpeed config this run hands to deepspeed.initialize, or a ConfigError naming the fix."""
    values, name = read_ds_config(source)
    for section in ("optimizer", "scheduler"):
        if section in values:
            raise ConfigError(
                f"{name} has an '{section}' section, but the harness builds AdamW with two learning-rate groups "
                f"(--learning_rate_generator, --learning_rate_compressor_*; --weight_decay, --adam_beta1/2, "
                f"--adam_epsilon) and the --lr_scheduler / --warmup_ratio schedule itself. Remove '{section}' "
                f"from {name} and set those flags instead.")
    _set_derived(values, name, "train_batch_size", plan.global_batch, plan)
    _set_derived(values, name, "train_micro_batch_size_per_gpu", plan.micro_batch, plan)
    _set_derived(values, name, "gradient_accumulation_steps", plan.accumulation, plan)
    _set_flag_value(values, name, "gradient_clipping", float(config.max_grad_norm), "--max_grad_norm")
    bf16, fp16 = precision_flags(config, on_gpu, bf16_supported)
    for key, enabled, flag in (("bf16", bf16, "--use_bf16"), ("fp16", fp16, "--use_fp16")):
        section = values.setdefault(key, {})
        if not isinstance(section, dict):
            raise ConfigError(f"{name}: '{key}' must be an object like {{\"enabled\": true}}.")
        _set_flag_value(section, name, "enabled", enabled, flag, path=f"{key}.enabled")
    values.pop("bfloat16", None)  # legacy spelling of "bf16": one source of truth
    zero = values.setdefault("zero_optimization", {"stage": 0})
    stage = zero.get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise ConfigError(f"{name}: zero_optimization.stage={stage!r}; use 0, 1, 2 or 3 (3 partitions parameters).")
    _resolve_bucket_sizes(zero, hidden_size)
    values.setdefault("steps_per_print", SILENT_STEPS)
    values.setdefault("wall_clock_breakdown", False)
    left = list(_auto_paths(values))
    if left:
        raise ConfigError(f"{name} still has \"auto\" at {', '.join(left)}. DeepSpeed does not resolve \"auto\" and "
                          f"the harness only fills the batch keys, gradient_clipping, bf16/fp16 and the ZeRO bucket "
                          f"sizes. Write numbers there (or remove the keys to take DeepSpeed's defaults).")
    return values


def check_checkpointing_support(deepspeed_version: str, stage: int, gradient_checkpointing: bool) -> None:
    """A clear error, before any model loads, for a DeepSpeed too old for ZeRO-3 checkpointing with frozen weights."""
    if stage != 3 or not gradient_checkpointing:
        return
    numbers = []
    for part in deepspeed_version.split("+")[0].split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        numbers.append(int(digits) if digits else 0)
    if tuple(numbers) >= ZERO3_CHECKPOINTING_FIX:
        return
    fix = ".".join(map(str, ZERO3_CHECKPOINTING_FIX))
    raise ConfigError(f"DeepSpeed {deepspeed_version} cannot run ZeRO-3 with gradient checkpointing on a frozen base "
                      f"generator: backward fails with a CheckpointError (fixed in DeepSpeed {fix}, PR #8148). "
                      f"Upgrade it (pip install 'deepspeed>={fix}'), or pass --gradient_checkpointing false.")


def zero_stage(ds_config: dict[str, Any]) -> int:
    return int(ds_config.get("zero_optimization", {}).get("stage", 0))


def offload_device(ds_config: dict[str, Any], what: str) -> str:
    """'none', 'cpu' or 'nvme' for what='optimizer' or 'param'."""
    section = ds_config.get("zero_optimization", {}).get(f"offload_{what}") or {}
    return str(section.get("device", "none") or "none")


# ---- helpers ---------------------------------------------------------------------------------------
def _set_derived(values: dict, name: str, key: str, derived: int, plan: BatchPlan) -> None:
    given = values.get(key, AUTO)
    if given != AUTO and given != derived:
        raise ConfigError(
            f"{name} sets {key}={given!r}, but this run's batch is {plan.describe()} "
            f"(from --batch_size {plan.global_batch} and --micro_batch_size {plan.micro_batch} over "
            f"{plan.dp_size} ranks), so {key} must be {derived}. Remove the batch keys from {name}: the harness "
            f"derives train_batch_size, train_micro_batch_size_per_gpu and gradient_accumulation_steps from the flags.")
    values[key] = derived


def _set_flag_value(values: dict, name: str, key: str, wanted: Any, flag: str, path: Optional[str] = None) -> None:
    given = values.get(key, AUTO)
    if given != AUTO and given != wanted:
        raise ConfigError(f"{name} sets {path or key}={given!r} but {flag} gives {wanted!r}. Remove "
                          f"{path or key} from {name} (the flag decides) or pass a matching {flag}.")
    values[key] = wanted


def _resolve_bucket_sizes(zero: dict[str, Any], hidden_size: Optional[int]) -> None:
    """The Hugging Face rules for "auto" bucket sizes, from the generator's hidden size."""
    if hidden_size is None:
        return
    rules = {"reduce_bucket_size": hidden_size * hidden_size,
             "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
             "stage3_param_persistence_threshold": 10 * hidden_size}
    for key, value in rules.items():
        if zero.get(key) == AUTO:
            zero[key] = value


def _auto_paths(values: Any, prefix: str = ""):
    if isinstance(values, dict):
        for key, value in values.items():
            yield from _auto_paths(value, f"{prefix}{key}.")
    elif values == AUTO:
        yield prefix.rstrip(".")
