# The DCP side (torch backend checkpoints): read / write torch.distributed.checkpoint folders in one process.
"""Layout (training/backends/torch_native/dcp_checkpoint.py writes it while training; this file defines it):

    <root>/step_N/model_and_optimizer/.metadata          DCP metadata: every key, its global shape, which file
    <root>/step_N/model_and_optimizer/__<rank>_0.distcp  the bytes; flattened keys:
        model.<ScaleDownModel name>                          every weight (float32 masters), global shape
        optim.state.<name>.{exp_avg,exp_avg_sq,step}         AdamW state of the phase's trainable parameters
        optim.param_groups.<i>.<key>                         hyper-parameters, "name" and "params": [names]
    <root>/step_N/client_state.pt                        the loop's state (torch.load weights_only=True)
    <root>/step_N/trainer_state.json                     written last: from then on the checkpoint is complete

Reading unpickles nothing but DCP's metadata classes and plain values (checkpoint/safe_dcp.py). Writing runs
without a process group (dcp.save(no_dist=True)): one shard file that any world size loads (DCP reshards).
A converted folder holds no optim.param_groups: the resuming run keeps its own hyper-parameters (as with DeepSpeed
universal checkpoints) and its LR schedule continues from client_state.pt's "optimizer_step" (the Adam step).
Source: PyTorch docs, "Distributed Checkpoint - torch.distributed.checkpoint" (save / load, FileSystemReader).
"""
from __future__ import annotations

import os
import shutil
import warnings
from typing import Any, Optional

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint._nested_dict import flatten_state_dict
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from scaledown.checkpoint import folder_protocol as dirs
from scaledown.checkpoint.deepspeed_write import trainable_groups
from scaledown.checkpoint.description import describe_checkpoint, write_metadata
from scaledown.checkpoint.full import ADAM_MOMENTS, FullCheckpoint, OptimizerState
from scaledown.checkpoint.safe_dcp import SafePlanner, SafeReader
from scaledown.checkpoint.safe_load import load_file
from scaledown.destination import check_destination
from scaledown.errors import CheckpointError

STATE_DIR = "model_and_optimizer"
CLIENT_FILE = "client_state.pt"
METADATA_FILE = ".metadata"
GROUPS_PREFIX = "optim.param_groups."


# ---- finding and checking a checkpoint ----------------------------------------------------------------------------
def is_checkpoint(path: str) -> bool:
    return os.path.isdir(os.path.join(path, STATE_DIR))


def find_tag(path: str, tag: Optional[str] = None) -> str:
    """`path` is a checkpoint (step_N), a run folder or its checkpoints/ (their newest complete checkpoint)."""
    if tag:
        path = os.path.join(path, tag)
    elif not is_checkpoint(path):
        for root in (path, dirs.checkpoints_root(path)):
            done = [p for _, p in dirs.complete_checkpoints(root) if is_checkpoint(p)]
            if done:
                path = done[-1]
                break
    if not is_checkpoint(path):
        raise CheckpointError(f"{path} is not a DCP checkpoint of the torch backend (no {STATE_DIR}/ folder) and holds "
                              f"no complete ones (step_N/ or checkpoints/step_N/). Pass a checkpoint folder "
                              f"OUTPUT_DIR/checkpoints/step_N of `scaledown train --backend torch`, or its run folder.")
    if not dirs.is_complete(path):
        raise dirs.damaged(os.path.join(path, dirs.STATE_FILE), "is missing (the run stopped while saving this "
                                                                "checkpoint)")
    return path


def read_metadata(state_dir: str):
    """DCP's Metadata of a state folder, through the allow-list; a damaged file -> CheckpointError naming it and the
    previous complete checkpoint."""
    file = os.path.join(state_dir, METADATA_FILE)
    if not os.path.isfile(file):
        raise dirs.damaged(file, "is missing")
    try:
        return SafeReader(state_dir).read_metadata()
    except CheckpointError:   # truncated, damaged, or objects that are not checkpoint metadata (never unpickled)
        raise dirs.damaged(file, "cannot be read as DCP metadata (truncated or damaged)") from None


def check_files(checkpoint: str):
    """Raise CheckpointError (naming the file and the previous complete checkpoint) when the metadata is unreadable or
    a shard file it names is missing or shorter than the bytes recorded for it; returns the metadata."""
    state_dir = os.path.join(checkpoint, STATE_DIR)
    metadata = read_metadata(state_dir)
    needed: dict[str, int] = {}
    for info in metadata.storage_data.values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    for relative, size in sorted(needed.items()):
        file = os.path.join(state_dir, relative)
        if not os.path.isfile(file):
            raise dirs.damaged(file, "is missing (a DCP shard the checkpoint's .metadata names)")
        if os.path.getsize(file) < size:
            raise dirs.damaged(file, f"is truncated ({os.path.getsize(file)} bytes; the checkpoint's .metadata "
                                     f"records {size})")
    return metadata


# ---- reading ------------------------------------------------------------------------------------------------------
def read_flat(state_dir: str, metadata) -> dict[str, Any]:
    """Every entry at its global shape, keyed by DCP's flattened names, read in this one process."""
    target: dict[str, Any] = {}
    for key, md in metadata.state_dict_metadata.items():
        target[key] = torch.empty(md.size, dtype=md.properties.dtype) if isinstance(md, TensorStorageMetadata) else None
    try:
        with warnings.catch_warnings():   # "torch.distributed is disabled ... single process": intended here
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(target, storage_reader=SafeReader(state_dir), planner=SafePlanner(), no_dist=True)
    except dcp.api.CheckpointException as exc:
        reasons = "; ".join(str(error).strip().splitlines()[-1][:300] for error, _ in exc.failures.values())
        raise dirs.damaged(os.path.join(state_dir, METADATA_FILE), f"names data that could not be read ({reasons})"
                           ) from None
    return target


def read_dcp(path: str, tag: Optional[str] = None, config_file: Optional[str] = None,
             trust_remote_code: bool = False) -> FullCheckpoint:
    checkpoint = find_tag(path, tag)
    description, _ = describe_checkpoint(checkpoint, config_file, "DCP", trust_remote_code)
    metadata = check_files(checkpoint)
    flat = read_flat(os.path.join(checkpoint, STATE_DIR), metadata)
    weights = {k[len("model."):]: v for k, v in flat.items() if k.startswith("model.")}
    moments: dict[str, dict[str, torch.Tensor]] = {}
    steps = []
    groups: dict[int, dict[str, Any]] = {}
    for key, value in flat.items():
        if key.startswith("optim.state."):
            name, _, field = key[len("optim.state."):].rpartition(".")
            if field == "step":
                steps.append(int(value))
            elif field in ADAM_MOMENTS:
                moments.setdefault(name, {})[field] = value
        elif key.startswith(GROUPS_PREFIX):
            index, _, field = key[len(GROUPS_PREFIX):].partition(".")
            groups.setdefault(int(index), {})[field] = value
    incomplete = sorted(n for n, m in moments.items() if set(m) != set(ADAM_MOMENTS))
    if incomplete:
        raise dirs.damaged(os.path.join(checkpoint, STATE_DIR, METADATA_FILE),
                           f"records only part of the Adam state of {incomplete[:3]}")
    ckpt = FullCheckpoint(description, weights, source=checkpoint,
                          trainer_state=dirs.state_if_any(checkpoint))
    ckpt.check_names(checkpoint)
    client = load_file(os.path.join(checkpoint, CLIENT_FILE)) if os.path.isfile(
        os.path.join(checkpoint, CLIENT_FILE)) else {}
    listed = [groups[i] for i in sorted(groups)] or list(client.get("scaledown_groups") or [])
    ckpt.optimizer = OptimizerState(moments, max(steps) if steps else 0, listed)
    if not listed:
        ckpt.optimizer.groups = trainable_groups(ckpt)   # ScaleDown's groups of the checkpoint's phase
    if not moments:
        ckpt.notes.append(f"{checkpoint} holds no Adam moments")
    return ckpt


# ---- writing ------------------------------------------------------------------------------------------------------
def write_dcp(ckpt: FullCheckpoint, directory: str, tag: Optional[str] = None, overwrite: bool = False) -> str:
    """Write <directory>/<tag>/ (tag: step_N of the source's trainer_state.json, else of its Adam step) that
    `scaledown train --backend torch --resume_from` continues at any world size; returns its path."""
    ckpt.complete_weights()
    groups = trainable_groups(ckpt)
    trainable = [n for g in groups for n in g["params"]]
    moments = ckpt.optimizer.moments if ckpt.optimizer else {}
    step = ckpt.optimizer.step if ckpt.optimizer else 0
    if any(n not in moments for n in trainable):
        ckpt.notes.append("no Adam moments in the source: the DCP checkpoint starts Adam from zero (step 0)")
        moments, step = {}, 0
    state = _trainer_state(ckpt, step)
    tag = tag or dirs.tag_for(int(state["step"]))
    final = os.path.join(directory, tag)
    check_destination(final, overwrite, "the checkpoint tag")
    os.makedirs(directory, exist_ok=True)
    tmp = dirs.new_staging(final)
    try:
        optim = {n: {"step": torch.tensor(float(step)),
                     **{k: (moments[n][k] if moments else torch.zeros(ckpt.weights[n].shape)).float().contiguous()
                        for k in ADAM_MOMENTS}} for n in trainable}
        model = {n: t.contiguous() for n, t in ckpt.weights.items()}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.save({"model": model, "optim": {"state": optim}}, checkpoint_id=os.path.join(tmp, STATE_DIR),
                     no_dist=True)
        torch.save({"optimizer_step": step, "scaledown_groups": groups, "converted_from": ckpt.source},
                   os.path.join(tmp, CLIENT_FILE))
        write_metadata(tmp, ckpt.description, {"layout": "dcp", "step": step})
        dirs.write_state(tmp, state)   # last: the folder is a complete checkpoint
        dirs.commit(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _trainer_state(ckpt: FullCheckpoint, step: int) -> dict[str, Any]:
    """The source's trainer_state.json (backend torch), or one at the Adam step for a source without one (a Hugging
    Face folder: step 0), recording the model so a resume checks its architecture."""
    config = ckpt.description.config
    state = dict(ckpt.trainer_state or {})
    if not isinstance(state.get("step"), int):
        # the model's resolved fields; not the preset that produced them (None in a saved folder, so a resume
        # command's --preset would read as an architecture change while every field it sets agrees)
        recorded = {k: v for k, v in config.to_dict().items() if k != "preset"}
        state = {"step": step, "phase": "pretrain" if config.stage == "pretrain" else "finetune", "config": recorded}
    return {**state, "backend": "torch", "converted_from": os.path.abspath(ckpt.source)}


# ---- resuming a converted checkpoint (torch backend) ----------------------------------------------------------------
def partial_load_allowed(state_dir: str, state: dict[str, Any]) -> bool:
    """Whether loading `state` (the run's nested model + optimizer state dict) may skip keys: only the optimizer's
    hyper-parameters (optim.param_groups.*) a converted checkpoint does not hold; any other entry the run needs but
    the checkpoint lacks raises CheckpointError naming it."""
    metadata = read_metadata(state_dir)
    flat, _ = flatten_state_dict(state)
    missing = [k for k in flat if k not in metadata.state_dict_metadata]
    other = [k for k in missing if not k.startswith(GROUPS_PREFIX)]
    if other:
        raise CheckpointError(f"{state_dir} lacks {len(other)} entries this run needs (e.g. {other[:3]}): it was "
                              f"written for another model, another training phase (warm-up vs fine-tuning) or other "
                              f"trainable parameters. Resume with the settings it was written with.")
    return bool(missing)
