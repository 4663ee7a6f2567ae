# Checkpoints of the PyTorch-native backend: torch.distributed.checkpoint (DCP) folders, resharded on load.
"""Layout of OUTPUT_DIR/checkpoints/step_N/ (written by every rank, committed by rank 0):

    model_and_optimizer/   DCP: .metadata + __<rank>_0.distcp, every weight and AdamW moment as global-shape
                           chunks keyed by parameter name (so any world size or mesh loads it)
    client_state.pt        rank 0's loop state (step, RNG, schedule step): torch.load(weights_only=True)
    trainer_state.json     written last by the loop: from then on the checkpoint counts as complete

DCP: torch.distributed.checkpoint.save / load with get_state_dict / set_state_dict (PyTorch docs, "Distributed
Checkpoint - torch.distributed.checkpoint").
"""
from __future__ import annotations

import os
import shutil
from typing import Any

import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from scaledown.checkpoint import dcp_format
from scaledown.checkpoint import folder_protocol as ckpt
from scaledown.checkpoint import safe_load
from scaledown.checkpoint.dcp_format import CLIENT_FILE, STATE_DIR  # the format's definition (offline reader/writer)
from scaledown.checkpoint.safe_dcp import SafePlanner, SafeReader
from scaledown.errors import CheckpointError
from scaledown.training.backends.local import _torch_save


def save(model, optimizer, path: str, client_state: dict[str, Any], is_main: bool, barrier) -> None:
    """Write the checkpoint into its staging folder and move it to `path` once every rank has written its shards
    (checkpoint/folder_protocol.py: staging_path, commit)."""
    staging = ckpt.staging_path(path)
    if is_main:
        shutil.rmtree(staging, ignore_errors=True)   # left by a run killed while saving
        os.makedirs(staging)
    barrier()
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=os.path.join(staging, STATE_DIR))
    if is_main:
        _torch_save(client_state, os.path.join(staging, CLIENT_FILE))
    barrier()
    if is_main:
        ckpt.commit(staging, path)
    barrier()


def files(path: str) -> list[str]:
    """The torch files a resume reads (checked for damage before loading; load() checks the DCP shards)."""
    return [os.path.join(path, CLIENT_FILE)]


def load(model, optimizer, path: str) -> dict[str, Any]:
    """Restore weights and optimizer moments in place (any world size); returns rank 0's client state."""
    state_dir = os.path.join(path, STATE_DIR)
    if not os.path.isdir(state_dir):
        raise CheckpointError(f"{path} has no {STATE_DIR}/: it is not a checkpoint of the torch backend. Resume it "
                              f"with the backend that wrote it, or convert it with `scaledown convert --to dcp`.")
    dcp_format.check_files(path)   # a missing shard or damaged .metadata: named, with the previous complete checkpoint
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    partial = dcp_format.partial_load_allowed(state_dir, state)   # converted: no hyper-parameters, the run keeps its own
    own_names = [list(group["params"]) for group in optim_state.get("param_groups", [])]
    try:   # no arbitrary unpickling
        dcp.load(state, storage_reader=SafeReader(state_dir), planner=SafePlanner(allow_partial_load=partial))
    except dcp.api.CheckpointException as exc:   # DCP gathers every rank's failure into one exception
        reasons = "; ".join(str(error).strip().splitlines()[-1][:300] for error, _ in exc.failures.values())
        raise CheckpointError(f"{state_dir} could not be loaded: {reasons}") from None
    # DCP keeps one copy of the non-tensor param_groups (one rank's), but pipeline stages hold different parameters:
    # each rank takes the saved hyper-parameters with its own parameter names (the same names under FSDP alone)
    for group, names in zip(state["optim"].get("param_groups", []), own_names):
        group["params"] = names
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    return safe_load.load_file(os.path.join(path, CLIENT_FILE))


def resume_schedule(scheduler, client: dict[str, Any]) -> None:
    """A converted checkpoint (`scaledown convert --to dcp`) records the Adam step instead of the scheduler's state:
    continue the LambdaLR there, as `optimizer_step` scheduler.step() calls would have (lr = base x lambda(step))."""
    step = client.get("optimizer_step")
    if step is None:
        return
    scheduler.last_epoch, scheduler._step_count = int(step), int(step) + 1
    lrs = [base * rule(int(step)) for base, rule in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs
