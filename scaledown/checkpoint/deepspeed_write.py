# The DeepSpeed side, writing: a universal checkpoint that a ZeRO-3 run of any world size starts from.
"""Output (DeepSpeed's universal format, plus what ScaleDown needs to start a run from it):

    <dir>/latest_universal                                   the tag (DeepSpeed's universal pointer)
    <dir>/<tag>/zero/<name>/fp32.pt                          {"param": full tensor} for EVERY parameter
                                                             (trainable: fp32 master; frozen: as stored)
    <dir>/<tag>/zero/<name>/exp_avg.pt, exp_avg_sq.pt        Adam moments of the trainable parameters (zeros and
                                                             step 0 when the source had none: a fresh Adam)
    <dir>/<tag>/zero/optimizer_state.pt                      step, common hyper-parameters, scaledown_groups
    <dir>/<tag>/zero_pp_rank_0_mp_rank_00_model_states.pt    engine metadata (global_steps, param shapes)
    <dir>/<tag>/scaledown_checkpoint.json, trainer_state.json (when the source was a training checkpoint)

DeepSpeed's own universal loader ("checkpoint": {"load_universal": true} + engine.load_checkpoint(dir))
restores the trainable parameters and their moments but neither frozen parameters nor per-group
hyper-parameters; checkpoint/deepspeed_engine.py::load_universal_checkpoint restores all of it.
"""
from __future__ import annotations

import os
import shutil
from collections import OrderedDict
from importlib import metadata
from typing import Any, Optional

import torch

from scaledown import atomic_files
from scaledown.checkpoint import folder_protocol as protocol
from scaledown.checkpoint.deepspeed_read import UNIVERSAL_LATEST
from scaledown.checkpoint.description import write_metadata
from scaledown.checkpoint.full import ADAM_MOMENTS, FullCheckpoint, write_trainer_state
from scaledown.destination import check_destination
from scaledown.models.tied_weights import drop_aliases, tied_aliases

MODEL_STATES = "zero_pp_rank_0_mp_rank_00_model_states.pt"


def trainable_groups(ckpt: FullCheckpoint) -> list[dict[str, Any]]:
    """The optimizer groups of the run that continues: the source's, else ScaleDown's for its phase."""
    if ckpt.optimizer and ckpt.optimizer.groups:
        return ckpt.optimizer.groups
    phase = (ckpt.trainer_state or {}).get("phase", "finetune")
    by_name = ckpt.description.trainable_groups(phase)
    names = list(dict.fromkeys(by_name.values()))
    return [{"name": g, "params": [n for n in ckpt.description.shapes() if by_name.get(n) == g]} for g in names]


def _common(groups: list[dict[str, Any]]) -> dict[str, Any]:
    """Hyper-parameters every group shares: DeepSpeed's universal loader copies group 0's keys onto all groups."""
    keys = set.intersection(*(set(g) for g in groups)) - {"params", "name", "lr", "initial_lr"} if groups else set()
    return {k: groups[0][k] for k in keys if all(g[k] == groups[0][k] for g in groups)}


def write_deepspeed(ckpt: FullCheckpoint, directory: str, tag: Optional[str] = None, overwrite: bool = False) -> str:
    ckpt.complete_weights()
    groups = trainable_groups(ckpt)
    step = ckpt.optimizer.step if ckpt.optimizer else 0
    state = ckpt.trainer_state
    tag = tag or (protocol.tag_for(int(state["step"])) if state and "step" in state else f"global_step{step}")
    check_destination(os.path.join(directory, tag), overwrite, "the checkpoint tag")
    moments = ckpt.optimizer.moments if ckpt.optimizer else {}
    trainable = [n for g in groups for n in g["params"]]
    trainable_set = set(trainable)
    if any(n not in moments for n in trainable):
        ckpt.notes.append("no Adam moments in the source: the DeepSpeed checkpoint starts Adam from zero (step 0)")
        moments, step = {}, 0
    os.makedirs(directory, exist_ok=True)
    final = os.path.join(directory, tag)
    tmp = protocol.new_staging(final)
    try:
        for name, tensor in drop_aliases(ckpt.weights, tied_aliases(ckpt.description.skeleton())).items():
            folder = os.path.join(tmp, "zero", name)   # a tied weight once: the engine lists each Parameter once
            os.makedirs(folder)
            torch.save({"param": tensor.contiguous()}, os.path.join(folder, "fp32.pt"))
            if name in trainable_set:
                for key in ADAM_MOMENTS:
                    value = moments[name][key] if moments else torch.zeros(tensor.shape, dtype=torch.float32)
                    torch.save({"param": value.contiguous()}, os.path.join(folder, f"{key}.pt"))
        torch.save({"optimizer_state_dict": {"state": {0: {"step": torch.tensor(float(step))}},
                                             "param_groups": [_common(groups)]},
                    "scaledown_groups": groups, "zero_stage": 3},
                   os.path.join(tmp, "zero", "optimizer_state.pt"))
        torch.save(_model_states(ckpt, groups, trainable, step), os.path.join(tmp, MODEL_STATES))
        write_metadata(tmp, ckpt.description, {"layout": "deepspeed-universal", "step": step})
        if state:
            write_trainer_state(ckpt, tmp, "deepspeed")
        protocol.commit(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_files.write_text(os.path.join(directory, UNIVERSAL_LATEST), tag)
    return final


def _model_states(ckpt: FullCheckpoint, groups: list[dict], trainable: list[str], step: int) -> dict[str, Any]:
    """What engine.load_checkpoint reads from a model-states file when it loads a universal checkpoint."""
    try:
        version = metadata.version("deepspeed")
    except metadata.PackageNotFoundError:
        version = "unknown"
    frozen = [n for n in drop_aliases(ckpt.weights, tied_aliases(ckpt.description.skeleton())) if n not in set(trainable)]
    return {"module": OrderedDict(), "buffer_names": [], "optimizer": None,
            "param_shapes": [OrderedDict((n, ckpt.weights[n].shape) for n in g["params"]) for g in groups],
            "frozen_param_shapes": OrderedDict((n, ckpt.weights[n].shape) for n in frozen),
            "frozen_param_fragments": OrderedDict(), "shared_params": {}, "lr_scheduler": None,
            "data_sampler": None, "random_ltd": None, "skipped_steps": 0, "global_steps": step,
            "global_samples": int((ckpt.trainer_state or {}).get("samples_seen", 0)), "dp_world_size": 1,
            "mp_world_size": 1, "ds_config": {}, "ds_version": version}
