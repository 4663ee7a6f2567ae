# The NeuronX Distributed side: read / write trainer-format TP x PP shards with the ParallelPlan.
"""Model shards hold, for every parameter of their pipeline stage, the slice their TP rank keeps
(ParallelPlan.local_state_dict); keys are ScaleDownModel names (see parallel/plan.py on naming).

Optimizer shards are torch optimizer state_dicts (NxD saves them as-is when ZeRO-1 is off): param_groups
carry "name", the hyper-parameters and "param_names" (torch records them when the optimizer is built from
(name, parameter) pairs); state[i] holds "step", "exp_avg", "exp_avg_sq" at the parameter's local shape.
The contract for the NxD backend: build the optimizer from ScaleDownModel.parameter_groups() (or the
warm-up groups), each group restricted to this rank's stage, as (name, parameter) pairs in named_parameters()
order. Shards without param_names carry weights only (the tool says so). ZeRO-1 runs write one optimizer file
per data-parallel rank in torch-xla's ZeroRedundancyOptimizer layout (nxd_files.py): the reader joins the
ranks' dim-0 chunks, and write_nxd(zero1_dp=D) writes that layout for D ranks.
"""
from __future__ import annotations

import os
import shutil
from typing import Any, Optional

import torch

from scaledown.checkpoint import folder_protocol as protocol
from scaledown.checkpoint import nxd_files as F
from scaledown.checkpoint.description import describe_checkpoint, write_metadata
from scaledown.checkpoint.full import ADAM_MOMENTS, FullCheckpoint, OptimizerState, PendingCheckpoint, write_trainer_state
from scaledown.destination import check_destination
from scaledown.errors import CheckpointError
from scaledown.parallel import ParallelPlan
from scaledown.parallel.layout import check_shard_shape

DEFAULT_TAG = "pretrained_weight"   # what NxD's examples call converted weights


def plan_for(ckpt_or_description, tp: int, pp: int, kv_replication: Optional[int]) -> ParallelPlan:
    description = getattr(ckpt_or_description, "description", ckpt_or_description)
    return ParallelPlan.for_model(description.skeleton(), tp=tp, pp=pp, kv_replication=kv_replication)


# ---- reading ---------------------------------------------------------------------------------------
def read_nxd(path: str, tag: Optional[str] = None, config_file: Optional[str] = None,
             trust_remote_code: bool = False) -> FullCheckpoint:
    tag_dir = F.find_tag(path, tag)
    description, meta = describe_checkpoint(tag_dir, config_file, "NxD", trust_remote_code)
    model_dir = os.path.join(tag_dir, "model")
    files = F.list_shards(model_dir)
    tp, pp = F.grid_of(files, model_dir)
    for key, found in (("tp", tp), ("pp", pp)):
        if key in meta and meta[key] != found:
            raise CheckpointError(f"{tag_dir}: the shards are for {key}={found} but its metadata says {key}={meta[key]}. "
                                  f"The folder mixes two checkpoints; convert a clean copy.")
    shards = {key: F.read_shard(file) for key, file in files.items()}
    plan = plan_for(description, tp, pp, meta.get("kv_replication") or _infer_kv(description, shards, tp, pp))
    for (t, p), shard in shards.items():
        _check_shard(plan, shard, t, p, files[(t, p)])
    weights, notes = plan.full_state_dict(shards)
    ckpt = FullCheckpoint(description, weights, source=tag_dir,
                          trainer_state=protocol.state_if_any(tag_dir))
    ckpt.notes += notes
    ckpt.check_names(tag_dir)
    ckpt.optimizer = _read_optimizer(plan, tag_dir, tp, pp, ckpt.notes)
    return ckpt


def _infer_kv(description, shards, tp: int, pp: int) -> Optional[int]:
    """KV replication from a k_proj shard's rows (a checkpoint written without our metadata)."""
    plan = plan_for(description, tp, pp, None)
    for name, p in plan.params.items():
        if p.layout.heads == "kv" and p.layout.partition_dim == 0 and name in shards[(0, p.stage)]:
            g = p.layout.geometry
            rows = shards[(0, p.stage)][name].shape[0]
            return rows * tp // (g.num_kv_heads * g.head_dim)
    return None


def _check_shard(plan: ParallelPlan, shard: dict, tp_rank: int, pp_rank: int, file: str) -> None:
    expected = set(plan.names_on_stage(pp_rank))
    found = {k for k, v in shard.items() if isinstance(v, torch.Tensor)}
    missing, extra = sorted(expected - found), sorted(found - expected)
    if extra:
        raise CheckpointError(f"{file} holds {len(extra)} tensors that pipeline stage {pp_rank} of this model does not "
                              f"own (e.g. {extra[:3]}): the shard belongs to another model, another --pp, or another "
                              f"stage. Pass the settings the checkpoint was written with.")
    if missing:
        raise CheckpointError(f"{file} lacks {len(missing)} tensors of pipeline stage {pp_rank} (e.g. {missing[:3]}): "
                              f"it belongs to another model or the checkpoint is incomplete.")
    for name in expected:
        check_shard_shape(name, shard[name], plan.params[name].local_shape(plan.tp), file)


def _read_optimizer(plan: ParallelPlan, tag_dir: str, tp: int, pp: int, notes: list[str]) -> Optional[OptimizerState]:
    folder = os.path.join(tag_dir, "optim")
    if not os.path.isdir(folder):
        return None
    by_rank = F.list_optimizer_shards(folder)
    files = {key: ranks[0] for key, ranks in by_rank.items()}
    if F.grid_of(files, folder) != (tp, pp):
        raise CheckpointError(f"{folder} has optimizer shards for another tp/pp grid than {tag_dir}/model "
                              f"(tp={tp}, pp={pp}). The folder mixes two checkpoints.")
    local: dict[tuple[int, int], dict[str, dict[str, torch.Tensor]]] = {}
    steps: list[int] = []
    groups: dict[str, dict[str, Any]] = {}
    for (t, p), file in files.items():
        sd = F.read_shard(file)
        if "base_state" in sd:
            sd = _join_zero1([sd] + [F.read_shard(by_rank[(t, p)][d]) for d in range(1, len(by_rank[(t, p)]))], file)
        elif len(by_rank[(t, p)]) > 1:
            raise CheckpointError(f"{folder} holds optimizer files for {len(by_rank[(t, p)])} data-parallel ranks of "
                                  f"tp={t}, pp={p}, but {file} is not in ZeRO-1's layout (no base_state): the folder "
                                  f"mixes two checkpoints.")
        if "state" not in sd or "param_groups" not in sd:
            notes.append(f"{file} is not a plain torch optimizer state (ZeRO-1?): Adam moments not converted")
            return None
        per_name: dict[str, dict[str, torch.Tensor]] = {}
        for i, group in enumerate(sd["param_groups"]):
            names = group.get("param_names")
            if names is None:
                notes.append(f"{file}: optimizer groups carry no param_names: Adam moments not converted")
                return None
            entry = groups.setdefault(group.get("name", str(i)), {
                **{k: v for k, v in group.items() if k not in ("params", "param_names")}, "params": []})
            for index, name in zip(group["params"], names):
                if name not in plan.params:
                    raise CheckpointError(f"{file}: optimizer state for {name}, which this model does not have.")
                state = sd["state"].get(index)
                if state:
                    per_name[name] = {k: state[k] for k in ADAM_MOMENTS}
                    steps.append(int(state["step"]))
                if name not in entry["params"]:
                    entry["params"].append(name)
        local[(t, p)] = per_name
    moments: dict[str, dict[str, torch.Tensor]] = {}
    for name in {n for shard in local.values() for n in shard}:
        stage = plan.stage_of(name)
        for key in ADAM_MOMENTS:
            full, found = plan.unshard(name, [local[(t, stage)][name][key] for t in range(tp)])
            moments.setdefault(name, {})[key] = full
            notes += found
    order = list(plan.params)
    for entry in groups.values():
        entry["params"].sort(key=order.index)
    return OptimizerState(moments, max(steps) if steps else 0, list(groups.values()))


def _join_zero1(ranks: list[dict[str, Any]], file: str) -> dict[str, Any]:
    """A plain torch optimizer dict from every data-parallel rank's ZeRO-1 file of one (tp, pp) shard: each
    moment is the ranks' dim-0 chunks concatenated and cut to shape_info (torch-xla pads to the DP size)."""
    first = ranks[0]
    state: dict[int, dict[str, torch.Tensor]] = {}
    for index, shape in first["shape_info"].items():
        if index not in first["base_state"]:
            continue
        try:
            entry = {k: torch.cat([r["base_state"][index][k] for r in ranks])[:shape[0]].reshape(shape)
                     for k in ADAM_MOMENTS}
        except (KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{file} and its other data-parallel ranks' files do not form one ZeRO-1 optimizer "
                                  f"state ({exc}): the folder mixes checkpoints or a file is damaged.")
        state[index] = {"step": first["base_state"][index]["step"], **entry}
    return {"state": state, "param_groups": first["param_groups"]}


# ---- writing ---------------------------------------------------------------------------------------
def write_nxd(ckpt: FullCheckpoint | PendingCheckpoint, directory: str, tp: int = 1, pp: int = 1,
              kv_replication: Optional[int] = None, xser: bool = False, tag: Optional[str] = None,
              zero1_dp: Optional[int] = None, overwrite: bool = False) -> str:
    """Write <directory>/<tag>/ (model shards, optimizer shards when moments exist, markers); returns its path.
    zero1_dp=D: the optimizer in ZeRO-1's layout for D data-parallel ranks (files dp_rank_00 .. D-1).
    A PendingCheckpoint is read only once the plan for tp / pp is built (its errors come before any tensor is read)."""
    plan = plan_for(ckpt, tp, pp, kv_replication)      # every divisibility error comes before any write
    if isinstance(ckpt, PendingCheckpoint):
        ckpt = ckpt.load()
    ckpt.complete_weights()
    state = ckpt.trainer_state
    tag = tag or (protocol.tag_for(int(state["step"])) if state and "step" in state else DEFAULT_TAG)
    check_destination(os.path.join(directory, tag), overwrite, "the checkpoint tag")
    os.makedirs(directory, exist_ok=True)
    final = os.path.join(directory, tag)
    tmp = protocol.new_staging(final)
    try:
        for sub in ("model", "optim") if ckpt.optimizer else ("model",):
            os.makedirs(os.path.join(tmp, sub))
        for p in range(pp):
            for t in range(tp):
                name = F.shard_name(t, p)
                F.write_shard(plan.local_state_dict(ckpt.weights, t, p), os.path.join(tmp, "model", name), xser)
                if ckpt.optimizer:
                    shard = _optimizer_shard(plan, ckpt.optimizer, t, p)
                    if zero1_dp is None:
                        F.write_shard(shard, os.path.join(tmp, "optim", name), xser)
                    for d in range(zero1_dp or 0):
                        F.write_shard(_zero1_file(shard, d, zero1_dp),
                                      os.path.join(tmp, "optim", F.shard_name(t, p, d)), xser)
        write_metadata(tmp, ckpt.description, {"layout": "nxd", "tp": tp, "pp": pp, "xser": xser, "zero1_dp": zero1_dp,
                                               "kv_replication": plan.kv_replication("generator"),
                                               "pipeline_cuts": plan.pipeline_cuts})
        if state:
            write_trainer_state(ckpt, tmp, "nxd")
        for marker in (F.STARTED, F.DONE):
            with open(os.path.join(tmp, marker), "w") as f:
                f.write("1")
        protocol.commit(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _optimizer_shard(plan: ParallelPlan, opt: OptimizerState, tp_rank: int, pp_rank: int) -> dict[str, Any]:
    on_stage = set(plan.names_on_stage(pp_rank))
    state: dict[int, dict[str, torch.Tensor]] = {}
    groups = []
    for group in opt.groups:
        names = [n for n in group["params"] if n in on_stage and n in opt.moments]
        indices = list(range(len(state), len(state) + len(names)))
        for index, name in zip(indices, names):
            state[index] = {"step": torch.tensor(float(opt.step)),
                            **{k: plan.shard(name, opt.moments[name][k], tp_rank) for k in ADAM_MOMENTS}}
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "param_names": names, "params": indices})
    return {"state": state, "param_groups": groups}


def _zero1_file(shard: dict[str, Any], dp_rank: int, dp: int) -> dict[str, Any]:
    """torch-xla ZeroRedundancyOptimizer.state_dict() of data-parallel rank `dp_rank` for a plain shard: each
    moment padded on dim 0 to a multiple of `dp` and cut into dp chunks (zero_redundancy_optimizer.py _shard_tensor)."""
    def chunk(tensor: torch.Tensor) -> torch.Tensor:
        missing = -tensor.shape[0] % dp
        if missing:
            tensor = torch.cat([tensor, tensor.new_zeros((missing,) + tuple(tensor.shape[1:]))])
        return tensor.float().chunk(dp)[dp_rank].clone()
    base = {i: {"step": s["step"], **{k: chunk(s[k]) for k in ADAM_MOMENTS}} for i, s in shard["state"].items()}
    shapes = {i: next(iter(s[k] for k in ADAM_MOMENTS)).shape for i, s in shard["state"].items()}
    return {"state": {}, "param_groups": shard["param_groups"], "base_state": base, "shape_info": shapes}
