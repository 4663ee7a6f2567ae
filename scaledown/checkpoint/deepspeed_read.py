# The DeepSpeed side, reading: ZeRO-3 checkpoints (any world size) and universal checkpoints, without DeepSpeed.
"""Native ZeRO-3 format (engine.save_checkpoint; parameter names are ScaleDownModel.named_parameters()
because the engine wraps the ScaleDownModel):

    <save_dir>/latest                                             the newest tag
    <tag>/zero_pp_rank_R_mp_rank_00_model_states.pt               param_shapes (trainable, per sub-group),
                                                                  frozen_param_shapes + this rank's frozen fragments
    <tag>/[bf16_]zero_pp_rank_R_mp_rank_00_optim_states.pt        fp32_flat_groups + flat Adam state of rank R

Every parameter is flattened, padded to a multiple of the world size W and cut into W equal pieces; a
rank's flat group is its pieces of the group's parameters in order (DeepSpeed's zero_to_fp32 rules).
Trainable weights come out as the fp32 masters, frozen ones as stored (16-bit under bf16).
Universal format (ds_to_universal or `scaledown convert --to deepspeed`): <tag>/zero/<name>/{fp32,exp_avg,
exp_avg_sq}.pt and <tag>/zero/optimizer_state.pt.
"""
from __future__ import annotations

import math
import os
import re
from collections import OrderedDict
from typing import Any, Optional

import torch

from scaledown.checkpoint import folder_protocol as protocol
from scaledown.checkpoint.description import describe_checkpoint
from scaledown.checkpoint.full import ADAM_MOMENTS, FullCheckpoint, OptimizerState
from scaledown.checkpoint.safe_load import load_file
from scaledown.errors import CheckpointError

MODEL_FILE = re.compile(r"^zero_pp_rank_(\d+)_mp_rank_(\d+)_model_states\.pt$")
UNIVERSAL_LATEST = "latest_universal"


def find_tag(path: str, tag: Optional[str] = None) -> str:
    """`path` is a tag folder, or a save dir whose `latest` / `latest_universal` names the tag."""
    if tag:
        path = os.path.join(path, tag)
    elif not _is_tag(path):
        for pointer in (protocol.LATEST_FILE, UNIVERSAL_LATEST):   # the loop's `latest` is DeepSpeed's too
            file = os.path.join(path, pointer)
            if os.path.isfile(file):
                with open(file) as f:
                    path = os.path.join(path, f.read().strip())
                break
        else:
            raise CheckpointError(f"{path} is neither a DeepSpeed checkpoint tag (zero_pp_rank_*_model_states.pt or "
                                  f"zero/) nor a save dir with a 'latest' file. Pass the folder given to "
                                  f"engine.save_checkpoint, or one tag folder in it.")
    if not _is_tag(path):
        raise CheckpointError(f"{path} holds no DeepSpeed ZeRO-3 files (zero_pp_rank_*_model_states.pt) and no "
                              f"universal zero/ folder.")
    return path


def _is_tag(path: str) -> bool:
    return os.path.isdir(path) and (os.path.isdir(os.path.join(path, "zero")) or any(
        MODEL_FILE.match(n) for n in os.listdir(path)))


def read_deepspeed(path: str, tag: Optional[str] = None, config_file: Optional[str] = None,
                   trust_remote_code: bool = False) -> FullCheckpoint:
    tag_dir = find_tag(path, tag)
    description, _ = describe_checkpoint(tag_dir, config_file, "DeepSpeed", trust_remote_code)
    state = protocol.state_if_any(tag_dir)
    ckpt = FullCheckpoint(description, {}, source=tag_dir, trainer_state=state)
    if os.path.isdir(os.path.join(tag_dir, "zero")):
        _read_universal(ckpt, tag_dir)
    else:
        _read_native(ckpt, tag_dir)
    ckpt.check_names(tag_dir)
    return ckpt


# ---- native ZeRO-3 ------------------------------------------------------------------------------------
def _rank_files(tag_dir: str) -> list[tuple[str, str]]:
    ranks: dict[int, str] = {}
    for name in os.listdir(tag_dir):
        m = MODEL_FILE.match(name)
        if m:
            if int(m.group(2)) != 0:
                raise CheckpointError(f"{tag_dir}/{name}: model-parallel DeepSpeed checkpoints (mp_rank > 0) are not "
                                      f"supported; ScaleDown trains with ZeRO-3 data parallelism only.")
            ranks[int(m.group(1))] = os.path.join(tag_dir, name)
    world = load_file(ranks[min(ranks)])["dp_world_size"]
    if sorted(ranks) != list(range(world)):
        missing = sorted(set(range(world)) - set(ranks))
        raise CheckpointError(f"{tag_dir} was written by {world} ranks but holds model-state files of ranks "
                              f"{sorted(ranks)} (missing {missing}, extra {sorted(set(ranks) - set(range(world)))}). "
                              f"Copy every rank's files of the checkpoint.")
    out = []
    for r in range(world):
        optim = [os.path.join(tag_dir, f"{p}zero_pp_rank_{r}_mp_rank_00_optim_states.pt") for p in ("bf16_", "")]
        found = [f for f in optim if os.path.isfile(f)]
        if not found:
            raise CheckpointError(f"{tag_dir} lacks the optimizer-state file of rank {r} ({os.path.basename(optim[1])}"
                                  f"): under ZeRO-3 it holds the trainable weights. Copy the whole checkpoint.")
        out.append((ranks[r], found[0]))
    return out


def _partitioned(numel: int, world: int) -> int:
    return math.ceil(numel / world)


def _gather(flat_per_rank: list[torch.Tensor], shapes: "OrderedDict[str, torch.Size]", world: int
            ) -> dict[str, torch.Tensor]:
    """Rebuild every parameter of `shapes` from each rank's concatenated flat partition."""
    out, offset = {}, 0
    for name, shape in shapes.items():
        numel = int(math.prod(shape))
        part = _partitioned(numel, world)
        pieces = [flat[offset:offset + part] for flat in flat_per_rank]
        out[name] = torch.cat(pieces)[:numel].view(shape).clone()
        offset += part
    if any(offset != flat.numel() for flat in flat_per_rank):
        raise CheckpointError("the flat ZeRO-3 partitions do not match the recorded parameter shapes: the model-state "
                              "and optimizer-state files come from different checkpoints.")
    return out


def _read_native(ckpt: FullCheckpoint, tag_dir: str) -> None:
    files = _rank_files(tag_dir)
    world = len(files)
    models = [load_file(m) for m, _ in files]
    optims = [load_file(o)["optimizer_state_dict"] for _, o in files]
    if int(optims[0].get("zero_stage", 3)) != 3:
        raise CheckpointError(f"{tag_dir} is a ZeRO stage {int(optims[0]['zero_stage'])} checkpoint; ScaleDown converts "
                              f"ZeRO-3 checkpoints (ds_configs/zero3.json).")
    sub_groups = models[0]["param_shapes"]
    shapes = OrderedDict((k, v) for group in sub_groups for k, v in group.items())
    ckpt.weights.update(_gather([torch.cat(o["fp32_flat_groups"]) for o in optims], shapes, world))
    frozen = models[0].get("frozen_param_shapes") or {}
    for name, shape in frozen.items():
        numel = int(math.prod(shape))
        ckpt.weights[name] = torch.cat([m["frozen_param_fragments"][name] for m in models])[:numel].view(shape).clone()
    for name in models[0].get("buffer_names", []):
        ckpt.weights[name] = models[0]["module"][name]
    base = optims[0]["optimizer_state_dict"]
    state = base.get("state", {})
    moments: dict[str, dict[str, torch.Tensor]] = {}
    if state and all(k in state.get(0, {}) for k in ADAM_MOMENTS):
        for key in ADAM_MOMENTS:
            flats = [torch.cat([o["optimizer_state_dict"]["state"][i][key] for i in range(len(sub_groups))])
                     for o in optims]
            for name, tensor in _gather(flats, shapes, world).items():
                moments.setdefault(name, {})[key] = tensor
    step = int(state[0]["step"]) if state and "step" in state.get(0, {}) else 0
    membership = ([list(g) for g in sub_groups] if len(sub_groups) == len(base["param_groups"]) else None)
    ckpt.optimizer = OptimizerState(moments, step, _groups(ckpt, base["param_groups"], membership, list(shapes)))
    if not moments:
        ckpt.notes.append(f"{tag_dir} holds no Adam moments (no optimizer step yet)")


def _groups(ckpt: FullCheckpoint, param_groups: list[dict], membership: Optional[list[list[str]]],
            trainable: list[str]) -> list[dict[str, Any]]:
    """Optimizer groups with hyper-parameters and member names (by position, else by ScaleDown's group names)."""
    if membership is None:
        phase = (ckpt.trainer_state or {}).get("phase", "finetune")
        by_name = ckpt.description.trainable_groups(phase)
        membership = [[n for n in trainable if by_name.get(n) == g.get("name")] for g in param_groups]
    return [{**{k: v for k, v in g.items() if k != "params"}, "params": names}
            for g, names in zip(param_groups, membership)]


# ---- universal ------------------------------------------------------------------------------------
def _tensor(value: Any, file: str) -> torch.Tensor:
    tensor = value.get("param") if isinstance(value, dict) else value
    if not isinstance(tensor, torch.Tensor):
        raise CheckpointError(f"{file} holds no tensor.")
    return tensor


def _read_universal(ckpt: FullCheckpoint, tag_dir: str) -> None:
    zero = os.path.join(tag_dir, "zero")
    shapes = ckpt.description.shapes()
    moments: dict[str, dict[str, torch.Tensor]] = {}
    for name in sorted(os.listdir(zero)):
        folder = os.path.join(zero, name)
        if not os.path.isdir(folder):
            continue
        if name not in shapes:
            raise CheckpointError(f"{folder}: this model has no parameter {name}; the checkpoint belongs to another "
                                  f"model or configuration.")
        ckpt.weights[name] = _tensor(load_file(os.path.join(folder, "fp32.pt")), folder).view(shapes[name]).clone()
        if all(os.path.isfile(os.path.join(folder, f"{k}.pt")) for k in ADAM_MOMENTS):
            moments[name] = {k: _tensor(load_file(os.path.join(folder, f"{k}.pt")), folder).view(shapes[name]).clone()
                             for k in ADAM_MOMENTS}
    _frozen_from_model_states(ckpt, tag_dir)
    sd = load_file(os.path.join(zero, "optimizer_state.pt"))
    inner = sd.get("optimizer_state_dict", {})
    step = inner.get("state", {}).get(0, {}).get("step", 0)
    groups = sd.get("scaledown_groups")
    if groups is None:
        trainable = [n for n in shapes if n in moments]
        groups = _groups(ckpt, sd.get("param_groups") or inner.get("param_groups", []), None, trainable)
    ckpt.optimizer = OptimizerState(moments, int(step), groups)


def _frozen_from_model_states(ckpt: FullCheckpoint, tag_dir: str) -> None:
    """ds_to_universal keeps only trainable parameters in zero/; frozen ones remain in the copied model states."""
    files = sorted((f for f in os.listdir(tag_dir) if MODEL_FILE.match(f)), key=lambda f: int(MODEL_FILE.match(f).group(1)))
    if not files:
        return
    models = [load_file(os.path.join(tag_dir, f)) for f in files]
    for name, shape in (models[0].get("frozen_param_shapes") or {}).items():
        if name not in ckpt.weights and all(name in (m.get("frozen_param_fragments") or {}) for m in models):
            numel = int(math.prod(shape))
            ckpt.weights[name] = torch.cat([m["frozen_param_fragments"][name] for m in models])[:numel].view(shape)
