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

import torch

from scaledown.checkpoint import folder_protocol as ckpt

STATE_DIR = "model_and_optimizer"
CLIENT_FILE = "client_state.pt"


def save(model, optimizer, path: str, client_state: dict[str, Any], is_main: bool, barrier) -> None:
    """Write the checkpoint into its staging folder and move it to `path` once every rank has written its shards
    (checkpoint/folder_protocol.py: staging_path, commit)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict
    staging = ckpt.staging_path(path)
    if is_main:
        shutil.rmtree(staging, ignore_errors=True)   # left by a run killed while saving
        os.makedirs(staging)
    barrier()
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=os.path.join(staging, STATE_DIR))
    if is_main:
        from scaledown.training.backends.local import _torch_save
        _torch_save(client_state, os.path.join(staging, CLIENT_FILE))
    barrier()
    if is_main:
        ckpt.commit(staging, path)
    barrier()


def files(path: str) -> list[str]:
    """The torch files a resume reads (checked for damage before loading; DCP checks its own shards on load)."""
    return [os.path.join(path, CLIENT_FILE)]


def load(model, optimizer, path: str) -> dict[str, Any]:
    """Restore weights and optimizer moments in place (any world size); returns rank 0's client state."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from scaledown.checkpoint import safe_load
    from scaledown.errors import CheckpointError
    state_dir = os.path.join(path, STATE_DIR)
    if not os.path.isfile(os.path.join(state_dir, ".metadata")):
        raise CheckpointError(f"{path} has no {STATE_DIR}/.metadata: it is not a checkpoint of the torch backend "
                              f"(or it is incomplete). Resume it with the backend that wrote it, or convert it with "
                              f"`scaledown convert`.")
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    from scaledown.training.backends.torch_native.safe_dcp import SafePlanner, SafeReader
    try:
        dcp.load(state, storage_reader=SafeReader(state_dir), planner=SafePlanner())   # no arbitrary unpickling
    except dcp.api.CheckpointException as exc:   # DCP gathers every rank's failure into one exception
        reasons = "; ".join(str(error).strip().splitlines()[-1][:300] for error, _ in exc.failures.values())
        raise CheckpointError(f"{state_dir} could not be loaded: {reasons}") from None
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    return safe_load.load_file(os.path.join(path, CLIENT_FILE))
