# Start a ZeRO-3 engine of any world size from a universal checkpoint written by `scaledown convert --to deepspeed`.
"""For the DeepSpeed backend: call after deepspeed.initialize (every rank, the optimizer already built):

    from scaledown.checkpoint.deepspeed_engine import is_universal, load_universal_checkpoint
    if is_universal(path):
        trainer_state = load_universal_checkpoint(engine, path)

It restores what DeepSpeed's own universal loader does not: frozen parameters (the base generator under
LoRA) and the per-group hyper-parameters stay as the backend built them. For every parameter it writes the
module weight (all ranks agree; GatheredParameters broadcasts rank 0's copy); for every trainable one also
the fp32 master partition and the Adam moments; then the optimizer step. Parameter names are
engine.module.named_parameters() = ScaleDownModel names.
"""
from __future__ import annotations

import os
from typing import Any

import torch

from scaledown.checkpoint import folder_protocol as protocol
from scaledown.checkpoint.full import ADAM_MOMENTS
from scaledown.checkpoint.safe_load import load_file
from scaledown.errors import CheckpointError


def is_universal(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "zero"))


def _full(folder: str, key: str) -> torch.Tensor:
    value = load_file(os.path.join(folder, f"{key}.pt"))
    return value["param"] if isinstance(value, dict) else value


def _set_partition(optimizer, param, value: torch.Tensor, key: str | None) -> None:
    """This rank's slice of `value` into the fp32 master (key None) or an optimizer state of `param`.

    DeepSpeed's safe_set_full_* cannot set a parameter whose size is not a multiple of the world size
    (it slices past the end); the flat value is padded like DeepSpeed pads the partitions.
    """
    partition, _ = optimizer._get_fp32_opt_state_partition(param, release_swap_buffers=False, optim_state_key=key)
    rank = optimizer._get_param_partition_rank(param)
    flat = value.detach().flatten().float()
    flat = torch.cat([flat, flat.new_zeros(max(0, partition.numel() * (rank + 1) - flat.numel()))])
    partition.data.copy_(flat.narrow(0, partition.numel() * rank, partition.numel()).to(partition.device))


def _init_adam_state(optimizer, step) -> None:
    """Adam's state is created lazily at the first step; a loaded run needs it now (DeepSpeed's loader does the same)."""
    for flat in optimizer.fp32_partitioned_groups_flat:
        state = optimizer.optimizer.state[flat]
        for key in ADAM_MOMENTS:
            if key not in state:
                state[key] = torch.zeros_like(flat)
        state["step"] = torch.tensor(float(step), dtype=torch.float32)


def load_universal_checkpoint(engine, path: str, load_optimizer_states: bool = True) -> dict[str, Any]:
    """Load weights (+ fp32 masters, Adam moments, step) into a ZeRO-3 engine.

    Returns the checkpoint's trainer_state.json (empty without one) plus "optimizer_step": the Adam step,
    i.e. the optimizer steps taken in the current phase (each phase has its own optimizer), which is where
    the backend's learning-rate schedule resumes.
    """
    import deepspeed
    zero = os.path.join(path, "zero")
    if not os.path.isdir(zero):
        raise CheckpointError(f"{path} has no zero/ folder: it is not a universal checkpoint. Convert it with "
                              f"`scaledown convert --to deepspeed`.")
    optimizer = engine.optimizer
    trainable = {id(p) for g in getattr(optimizer, "fp16_groups", []) for p in g}
    step = load_file(os.path.join(zero, "optimizer_state.pt"))["optimizer_state_dict"]["state"][0]["step"]
    if load_optimizer_states:
        _init_adam_state(optimizer, step)
    for name, param in engine.module.named_parameters():
        folder = os.path.join(zero, name)
        if not os.path.isdir(folder):
            raise CheckpointError(f"{path} has no weights for {name}: it was written for another model.")
        full = _full(folder, "fp32")
        if tuple(full.shape) != tuple(getattr(param, "ds_shape", param.shape)):
            raise CheckpointError(f"{folder}: shape {tuple(full.shape)} does not match the model's "
                                  f"{tuple(param.ds_shape)}; the checkpoint belongs to another model.")
        with deepspeed.zero.GatheredParameters([param], modifier_rank=0):
            param.data.copy_(full.to(param.dtype))
        if id(param) in trainable:
            _set_partition(optimizer, param, full, None)
            if load_optimizer_states:
                for key in ADAM_MOMENTS:
                    _set_partition(optimizer, param, _full(folder, key), key)
    if load_optimizer_states:
        engine.global_steps = int(step)
    return {**(protocol.state_if_any(path) or {}), "optimizer_step": int(step)}
